"""The sorter checkpoints shipped with sodeep (package data, described in ``MODEL_CARD.md`` here):
``conv_sorter.pt`` (the default, ``sodeep.load_sorter()``), ``conv_sorter_depth2.pt``, and the
original SoDeep networks ``original_cnn_n100.pt`` and ``original_lstm_n100.pt``.  The path of
any of them, in a clone or an installed package alike:
``sodeep.checkpoints.default_sorter_path("original_cnn_n100.pt")``."""
