"""medvr-verl: MedVR (EVR + CCA) as a plugin for veRL 0.9.1.

Installed beside upstream veRL; ``import verl`` loads it through the ``verl.plugins`` entry point.
"""

from setuptools import find_packages, setup

setup(
    name="medvr-verl",
    version="0.1.0",
    description="MedVR for veRL: zoom-in agent, entropy-guided visual regrounding, consensus credit assignment",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # recipes/ lives at the repository root for users to read and edit, and ships inside the
    # package as medvr_verl.recipes so Hydra (pkg://medvr_verl.recipes.medvr) and veRL's workers find
    # it wherever the plugin is installed.
    packages=find_packages(include=["medvr_verl", "medvr_verl.*"])
    + ["medvr_verl.recipes", "medvr_verl.recipes.medvr", "medvr_verl.recipes.medvlm_r1"],
    package_dir={"medvr_verl.recipes": "recipes"},
    package_data={"medvr_verl.testing": ["*.jinja"], "medvr_verl.recipes.medvr": ["*.yaml", "*/*.yaml", "*.jinja"], "medvr_verl.recipes.medvlm_r1": ["*.yaml"]},
    install_requires=[
        "verl==0.9.1",
        # imported by veRL 0.9.1's rollout package (agent loops, LLM server client) but missing
        # from its wheel's requirements
        "cachetools",
        "fastapi",
        "uvicorn",
        "numpy",
        "pillow",
    ],
    extras_require={
        # scripts/test.sh pins torch/torchvision so pip takes the wheels on the machine's disk.
        "test": ["pytest", "pytest-asyncio", "hypothesis", "pydicom", "qwen-vl-utils", "torchvision"],
        "vllm": ["vllm", "flash-attn"],
    },
    entry_points={
        "verl.plugins": ["medvr = medvr_verl.plugin"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
    ],
)
