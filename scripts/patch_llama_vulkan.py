"""Make llama-cpp-python's vendored llama.cpp build its Vulkan backend against older Vulkan headers.

llama.cpp passes VK_EXT_layer_settings (Vulkan headers 1.3.261+) when it creates its instance, only to turn
on the validation layer's best-practice checks in debug runs. Debian 12 ships headers 1.3.239, which lack
that type; with them the instance is created without those settings (nothing else changes). A newer
header set leaves the source as it is. Usage: patch_llama_vulkan.py <unpacked llama-cpp-python sdist>
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

GUARD = "#if VK_HEADER_VERSION >= 261  /* patched by scripts/patch_llama_vulkan.py */"


def header_version() -> int:
    for include in (Path("/usr/include/vulkan/vulkan_core.h"), Path("/usr/local/include/vulkan/vulkan_core.h")):
        if include.is_file():
            found = re.search(r"#define VK_HEADER_VERSION (\d+)", include.read_text(errors="replace"))
            if found:
                return int(found.group(1))
    return 0


def main(root: Path) -> int:
    source = root / "vendor/llama.cpp/ggml/src/ggml-vulkan/ggml-vulkan.cpp"
    text = source.read_text()
    version = header_version()
    if version >= 261 or GUARD in text:
        print(f"patch_llama_vulkan: Vulkan headers {version or 'unknown'}: nothing to patch")
        return 0
    start = text.find("    VkBool32 enable_best_practice = layer_settings;")
    create = "    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions, &layer_setting_info);"  # noqa: E501
    end = text.find(create, start)
    if start < 0 or end < 0:
        print(f"patch_llama_vulkan: {source} changed: the layer-settings code was not found", file=sys.stderr)
        return 1
    plain = "    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions);"
    block = text[start : end + len(create)]
    text = text.replace(block, f"{GUARD}\n{block}\n#else\n{plain}\n#endif", 1)
    source.write_text(text)
    print(f"patch_llama_vulkan: Vulkan headers {version}: instance created without VK_EXT_layer_settings")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
