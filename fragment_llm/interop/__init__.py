"""Models in and out of Hugging Face's format: GPT-2, Llama and Qwen3 model directories.

Modules: `hf_config` (our GPTConfig <-> config.json, refusals by field), `hf_weights` (our state
dict <-> their tensors: names, transposes, fused matrices), `hf_dir` (reading a model directory
without trusting it: safetensors only, every shape checked before anything is built),
`export` (`export.py`: writing one), `model_card` (its README.md). `transformers` itself is
never imported here: the formats are plain JSON and safetensors.
"""
