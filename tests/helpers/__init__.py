"""Test helpers shared across the suite: tiny random models in every real key layout (``tiny_models``,
``vision_fixtures``, ``scoring_fixtures``, ``full_clip_models``), the independent recipe reference
(``recipe_reference``), bounded child processes (``bounded``), workflow checks and small shared tools
(``shared_helpers``: ``assert_close``, ``pinned_host``, ``spy_on_reads``, ``BAD_REQUESTS``)."""
