"""Import an exported asset into Blender headless and report what Blender sees, as one JSON line.

    blender -b --factory-startup --python tools/blender_check.py -- FILE.glb|FILE.obj|FILE.usdz
    tools/bpy-venv/bin/python tools/blender_check.py -- FILE.usdz       (Blender as a module, pip's bpy)

Prints `BLENDER_CHECK {"vertices": N, "faces": F, "objects": K, "textures": [[name, w, h], ...], ...}`:
vertex and face counts of all imported meshes, and the images that feed a material's Base Color (the texture
is attached only if it loaded with a non-zero size). Exit code 0 after a report, 1 when the import failed, 3 when
this Blender was built without the format's importer (Debian's blender has no USD: BLENDER_CHECK_UNSUPPORTED).
"""
import json
import sys

import bpy

USD_SUFFIXES = (".usd", ".usda", ".usdc", ".usdz")


def base_color_images(material) -> list:
    """Images linked (directly or through other nodes) into the Principled BSDF's Base Color input."""
    if material is None or not material.use_nodes:
        return []
    found = []
    for node in material.node_tree.nodes:
        if node.type != "BSDF_PRINCIPLED":
            continue
        stack = [link.from_node for link in node.inputs["Base Color"].links]
        while stack:
            n = stack.pop()
            if n.type == "TEX_IMAGE" and n.image is not None:
                found.append(n.image)
            stack.extend(link.from_node for inp in n.inputs for link in inp.links)
    return found


def numpy_compat() -> None:
    """Blender 3.4's glTF importer uses `np.bool`, removed in NumPy 1.24 (Debian 12 ships 1.24): alias it."""
    import numpy

    if "bool" not in numpy.__dict__:
        numpy.bool = bool


def main() -> int:
    numpy_compat()
    path = sys.argv[sys.argv.index("--") + 1]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if path.lower().endswith((".glb", ".gltf")):
        bpy.ops.import_scene.gltf(filepath=path)
    elif path.lower().endswith(".obj"):
        bpy.ops.wm.obj_import(filepath=path)
    elif path.lower().endswith(".stl"):
        bpy.ops.import_mesh.stl(filepath=path)  # STL has no units: 1 mm arrives as 1 Blender unit, Z up as written
    elif path.lower().endswith(USD_SUFFIXES):
        if not getattr(bpy.app.build_options, "usd", False):
            print(f"BLENDER_CHECK_UNSUPPORTED Blender {bpy.app.version_string} was built without USD")
            return 3
        bpy.ops.wm.usd_import(filepath=path)  # textures of a .usdz are unpacked and packed into the .blend
    else:
        print(f"unsupported file {path}", file=sys.stderr)
        return 1
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    textures, colorspaces = [], []
    for o in meshes:
        for slot in o.material_slots:
            for image in base_color_images(slot.material):
                w, h = image.size
                textures.append([image.name, int(w), int(h)])
                colorspaces.append(image.colorspace_settings.name)
    report = {
        "objects": len(meshes),
        "vertices": sum(len(o.data.vertices) for o in meshes),
        "faces": sum(len(o.data.polygons) for o in meshes),
        "uv_layers": sum(len(o.data.uv_layers) for o in meshes),
        "textures": textures,
        "texture_colorspaces": colorspaces,
        "dimensions": [list(o.dimensions) for o in meshes],
        "min_z": min((min((o.matrix_world @ v.co).z for v in o.data.vertices) for o in meshes), default=None),
    }
    print("BLENDER_CHECK " + json.dumps(report))
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except Exception as e:  # noqa: BLE001 - reported as a failed import
        print(f"BLENDER_CHECK_FAILED {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.exit(code)
