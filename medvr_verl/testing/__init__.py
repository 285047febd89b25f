"""Test and demo fixtures for medvr-verl (CPU-only, offline).

Nothing here is used by training code paths. The pieces are:

* :mod:`medvr_verl.testing.tiny_qwen25vl` -- writes a tiny Qwen2.5-VL model directory with
  RANDOM weights and a real byte-level BPE tokenizer / Qwen2.5-VL processor, built offline.
* :mod:`medvr_verl.testing.scripted_server` -- :class:`ScriptedLLMClient`, a drop-in stand-in
  for veRL's ``LLMServerClient`` (the GPU-only vLLM server) that replays scripted assistant turns.
* :mod:`medvr_verl.testing.harness` -- compose veRL's real ``ppo_trainer`` config for CPU and run
  veRL's stock ``AgentLoopWorker`` in a local Ray session.

Submodules are imported lazily so that ``import medvr_verl.testing`` stays cheap.
"""
