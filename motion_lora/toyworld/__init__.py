"""A world small enough to pretrain a text-to-video model on a CPU, where motion transfer can be measured exactly.

`world` renders the clips, `model` builds (and loads the shipped weights of) the toy model,
`pretrain` trains it, `metrics` scores generated clips, `evaluate` samples and scores the model.
"""
