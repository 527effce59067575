"""Task heads shared by systems (segmentation decoders, attention fusers, classifiers)."""
