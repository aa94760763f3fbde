"""The Facial Image Concept Tree (FICT): concepts, lookup and landmark geometry -> concept masks."""
from fifa_lab.fict.tree import (DEFAULT_TREE, Concept, ConceptTree, TreeError, coarse_tree, leaf_lookup, load_tree,
                                tree_from_dict)

__all__ = ["DEFAULT_TREE", "Concept", "ConceptTree", "TreeError", "coarse_tree", "leaf_lookup", "load_tree",
           "tree_from_dict"]
