"""What a training checkpoint holds besides Lightning's own keys: one place for the names
the pipeline writes, the loader reads and a method may set."""

from __future__ import annotations

#: Hyper-parameter holding the encoder's ``{"kind": NAME, **spec_dict()}``.
ENCODER_HPARAM = "encoder"
#: Hyper-parameter key of what the encoder carries beside its architecture: the prompts it
#: trains with and its Matryoshka sizes (a checkpoint loaded for embed / eval keeps them).
ENCODER_EXTRAS_HPARAM = "encoder_extras"
#: The encoder's weights in ``state_dict`` start with this.
ENCODER_PREFIX = "encoder."
#: Set by a method that leaves its (frozen, unchanged) encoder's weights out of the
#: checkpoint: the fingerprint of the encoder it was trained on.
FROZEN_ENCODER_KEY = "contrastlib_frozen_encoder"
