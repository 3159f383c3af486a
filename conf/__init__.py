"""peftbench's Hydra configs, installed as the package ``peftbench.conf`` (see peftbench.resources)."""
