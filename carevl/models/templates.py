"""Jinja chat templates for the locally built models, one per model family.

Every template accepts both plain-string message content and transformers' multimodal content lists
(`[{"type": "image"}, {"type": "text", "text": ...}]`), the roles system/user/assistant, and
`add_generation_prompt`. An image part renders as the model's image token (only the VLM templates
allow images); any other part type raises, so a malformed message never renders silently.
"""
from __future__ import annotations

IMAGE_TOKEN = "<image>"


def continues_reply(conversation: list[dict]) -> bool:
    """True when the conversation ends with a (pre-filled) assistant message to be continued."""
    return bool(conversation) and conversation[-1].get("role") == "assistant"


def continuation_kwargs(conversation: list[dict]) -> dict:
    """Chat-template flags (transformers and vLLM share them): continue a trailing assistant message,
    otherwise open a new assistant turn."""
    if continues_reply(conversation):
        return {"add_generation_prompt": False, "continue_final_message": True}
    return {"add_generation_prompt": True}


def with_image_parts(messages: list[dict], image, image_part) -> list[dict]:
    """transformers-style chat messages with every `{"type": "image"}` part replaced by
    `image_part(image)` (the serving API's own image part); text parts and string contents are kept."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
            continue
        parts = []
        for part in content:
            if part.get("type") == "image":
                if image is None:
                    raise ValueError("the conversation has an image part but no image was given")
                parts.append(image_part(image))
            else:
                parts.append({"type": "text", "text": part["text"]})
        out.append({"role": message["role"], "content": parts})
    return out


# Renders `message['content']` (a string or a list of parts) into the variable `text`.
_CONTENT_MACRO = """\
{%- macro render(content, allow_images) -%}
{%- if content is string -%}{{- content -}}
{%- else -%}{%- for part in content -%}
{%- if part['type'] == 'text' -%}{{- part['text'] -}}
{%- elif part['type'] == 'image' and allow_images -%}{{- '""" + IMAGE_TOKEN + """\\n' -}}
{%- else -%}{{- raise_exception('unsupported content part type: ' + part['type']) -}}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
"""


def chatml_template(default_system: str | None, allow_images: bool) -> str:
    """ChatML (`<|im_start|>role ... <|im_end|>`), used by SmolLM2 and Qwen2.

    `default_system` is inserted when the conversation has no system message, as the SmolLM2 and
    Qwen2 instruct models were trained with one.
    """
    head = ""
    if default_system:
        head = (
            "{%- if messages[0]['role'] != 'system' -%}"
            "{{- '<|im_start|>system\\n" + _escape(default_system) + "<|im_end|>\\n' -}}"
            "{%- endif -%}"
        )
    return (
        _CONTENT_MACRO + head
        + "{%- for message in messages -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
        "{{- render(message['content'], " + _bool(allow_images) + ") -}}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


def llama3_template() -> str:
    """Llama 3 header style (`<|start_header_id|>role<|end_header_id|>`)."""
    return (
        _CONTENT_MACRO
        + "{{- '<|begin_of_text|>' -}}"
        "{%- for message in messages -%}"
        "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}"
        "{{- render(message['content'], false) | trim -}}{{- '<|eot_id|>' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
    )


def gemma_template() -> str:
    """Gemma turns (`<start_of_turn>user|model`); Gemma has no system role, so a system message is
    prepended to the first user turn."""
    return (
        _CONTENT_MACRO
        + "{{- '<bos>' -}}"
        "{%- set ns = namespace(system='') -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}{%- set ns.system = render(message['content'], false) + '\\n\\n' -%}"
        "{%- else -%}"
        "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
        "{{- '<start_of_turn>' + role + '\\n' + ns.system + render(message['content'], false) | trim -}}"
        "{{- '<end_of_turn>\\n' -}}{%- set ns.system = '' -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
    )


def mistral_template() -> str:
    """Mistral instruct (`[INST] ... [/INST]answer</s>`); a system message joins the first user turn."""
    return (
        _CONTENT_MACRO
        + "{{- '<s>' -}}"
        "{%- set ns = namespace(system='') -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}{%- set ns.system = render(message['content'], false) + '\\n\\n' -%}"
        "{%- elif message['role'] == 'user' -%}"
        "{{- '[INST] ' + ns.system + render(message['content'], false) | trim + ' [/INST]' -}}"
        "{%- set ns.system = '' -%}"
        "{%- else -%}{{- render(message['content'], false) | trim + '</s>' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _bool(flag: bool) -> str:
    return "true" if flag else "false"
