"""UV unwrapping with xatlas: charts packed into [0, 1]^2, vertices split along the seams.

xatlas runs in a forked child process that sends its result back and then exits with `os._exit`, skipping
the library's teardown: xatlas's thread-pool destructor can deadlock (seen on this 2-core machine under load:
the main thread waited forever in `TaskScheduler::~TaskScheduler` joining a worker that missed its wake-up).
Where `fork` is not available (Windows) it runs in-process. The child never outlives the parent: it closes its
copy of the pipe's reading end (so a send to a dead parent fails instead of blocking for ever) and, on Linux, asks
the kernel to kill it when the parent dies (kill -9 or the OOM killer during an export used to leave one hung
child holding ~430 MB per kill).
"""
from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np

Unwrapped = tuple[np.ndarray, np.ndarray, np.ndarray]


def unwrap(vertices: np.ndarray, faces: np.ndarray, texture_size: int, padding: int) -> Unwrapped:
    """(vmap [V'], faces' [F, 3], uvs [V', 2]) for `vertices [V, 3]`, `faces [F, 3]`.

    New vertex i is old vertex vmap[i]; uvs are in glTF convention (v down), charts `padding` texels apart
    in a `texture_size`² atlas.
    """
    if "fork" not in mp.get_all_start_methods():
        return unwrap_here(vertices, faces, texture_size, padding)
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, receive, os.getpid(), vertices, faces, texture_size, padding),
                        daemon=True)
    child.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        raise RuntimeError(f"xatlas UV unwrapping died (exit code {child.exitcode})") from None
    except BaseException:  # a stop (Ctrl-C, SIGTERM) while the child works: it goes now, not when it is done
        child.kill()
        raise
    finally:
        receive.close()
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    if isinstance(result, BaseException):
        raise result
    return result


def _child(send, receive, parent: int, vertices: np.ndarray, faces: np.ndarray, texture_size: int,
           padding: int) -> None:
    receive.close()  # the parent's end: with it open here, a send to a dead parent would block for ever
    _die_with_parent(parent)
    try:
        send.send(unwrap_here(vertices, faces, texture_size, padding))
    except BaseException as e:  # noqa: BLE001 - re-raised in the parent
        send.send(e)
    finally:
        send.close()
        os._exit(0)  # no interpreter or xatlas teardown in the child


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG); exit now if it already has."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the closed reading end still ends the child at its send
    if os.getppid() != parent:
        os._exit(1)


def unwrap_here(vertices: np.ndarray, faces: np.ndarray, texture_size: int, padding: int) -> Unwrapped:
    """`unwrap` in this process (xatlas's teardown runs here)."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices.astype(np.float32), faces.astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmap, idx, uvs = atlas[0]
    return vmap.astype(np.int64), idx.astype(np.int64), uvs.astype(np.float32)
