"""A procedural world of simple 3D objects with known ground truth (SDFs), its renderer and captions.

The embedded text-to-image model (studio/embedded) is trained on renders of this world.
"""
from studio.world.objects import OBJECTS, SDFObject, get_object
from studio.world.world import World

__all__ = ["OBJECTS", "SDFObject", "get_object", "World"]
