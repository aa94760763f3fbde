"""fifa-lab: a notebook workbench for fine-grained explainable deepfake analysis (Fake-in-Facext).

Subpackages: ``fict`` (the concept tree), ``faces`` (synthetic faces and photos), ``forge`` (forgeries
with ground truth), ``annotate`` (the FiFa-Annotator), ``tasks`` and ``data`` (the FiFa-11 instruction
data), ``viz`` and ``widgets`` (pictures and notebook front ends); ``pipeline`` runs the notebooks.
"""
__version__ = "0.1.0"
