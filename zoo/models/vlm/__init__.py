"""Vision-language models (the ``vlm`` kind): LLaVA-1.5 and Qwen2-VL behind one interface, plus the contact-token
projection (InteractVLM's reasoning module)."""
