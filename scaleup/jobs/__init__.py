"""Training jobs of the scale-up, each a package runnable with ``accelerate launch -m scaleup.jobs.NAME``."""
