"""2D localizers: models that turn an image and a prompt embedding into a mask (MV-Loc's SAM)."""
