"""A procedural world of simple 3D objects with known ground truth (SDFs), its renderer and captions.

The embedded text-to-image model (training/) is trained on renders of this world.
"""
from world.objects import OBJECTS, SDFObject, get_object
from world.world import World

__all__ = ["OBJECTS", "SDFObject", "get_object", "World"]
