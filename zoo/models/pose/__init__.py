"""Body pose priors (``pose_prior`` kind): VPoser v2, InterFusion's anchor-pose codebook and the
AvatarCLIP-style retrieval baseline, plus readers of mocap pose sets."""
