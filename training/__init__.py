"""Training: generated, rendered and labelled captchas in, model folders (model.h5 + captchalens.json) out.

Imported as `captchalens.training`; `captchalens train|eval|gen` are its commands (cli.py)."""
