"""The tasks a study runs over, by `config.track` (docs/design.md §2): `image` (image
classification, `tasks/image.py`) and `lm` (question answering with a small language model,
`tasks/lm.py`), both `base.Task`s; `runner.py` runs the same stages over either."""
