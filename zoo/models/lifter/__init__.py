"""Feature lifters: turn one prompt embedding into one embedding per rendered view."""
