"""Data in: the interactions and id-map types, loaders, synthetic streams and splits."""

from liverec.data.interactions import Dataset, Histories, IdMap, Interactions, ItemMetadata, UserMetadata

__all__ = ["Dataset", "Histories", "IdMap", "Interactions", "ItemMetadata", "UserMetadata"]
