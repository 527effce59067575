"""Per-sample pose fitting: geometry, losses and collision of PHOSA and contact-guided reconstruction."""
