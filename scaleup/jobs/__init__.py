"""Scale-up jobs: each binds :mod:`theory` losses to real diffusers models, one package per job."""
