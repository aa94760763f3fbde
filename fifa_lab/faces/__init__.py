"""Face sources: procedural synthetic faces (the offline default) and photos through a landmark backend."""
from fifa_lab.faces.face import Face
from fifa_lab.faces.image_io import ImageError, load_image
from fifa_lab.faces.landmarks import available_backends, get_backend, register_backend
from fifa_lab.faces.photo import NoFaceError, align_landmarks, detect_face
from fifa_lab.faces.synth import synth_face

__all__ = ["Face", "ImageError", "NoFaceError", "align_landmarks", "available_backends",
           "detect_face", "get_backend", "load_image", "register_backend", "synth_face"]
