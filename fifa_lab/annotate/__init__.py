"""FiFa-Annotator: artifact masks, FICT concepts, measured artifact attributes and explanations."""
from fifa_lab.annotate.annotator import Annotation, annotate
from fifa_lab.annotate.mask import RULES, artifact_mask, difference_map
from fifa_lab.annotate.reliability import reliability_report

__all__ = ["RULES", "Annotation", "annotate", "artifact_mask", "difference_map", "reliability_report"]
