"""Each lesson's own helpers, by number: ``part1`` (training vs inference, measured), ``part2`` (one forward pass
stage by stage), ``part3`` (prefill, decode and the cache inside), ``part4`` (batch regimes, queueing), ``part5``
(the optimizations' yardsticks). Lesson 6's are ``inferlab.engine.serving`` and ``baselines``. A notebook
imports its own as ``from inferlab.lessons import part3 as lesson``."""
