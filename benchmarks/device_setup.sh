# Source this at the start of a `run` on the lent GPU machine (carry: [".whl"]):
#   source benchmarks/device_setup.sh
# That machine has torch/transformers/peft but no package registry: the few pure-Python
# dependencies it lacks travel as wheels in .whl/ (see /work/.library/device/README.md), and
# spanlab itself is used from src/ via PYTHONPATH (`python3 -m spanlab ...` = `spanlab ...`).
# Make .whl/ once on the dev machine (it is git-ignored; add `/.whl/` to .git/info/exclude):
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     wonderwords==3.0.1 nupunkt==0.8.0 pytest-timeout==2.4.0 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types typing-inspection \
#     transformers==5.25.0 'huggingface-hub>=2.4,<3' 'kernels>=0.19.1,<0.20' 'click>=8.4.2' 'httpx2>=2,<3' 'hf-xet>=1.6,<2' tomlkit \
#     'regex>=2025.10.22' fla-core==0.6.0 httpcore2==2.17.0 'truststore>=0.10' 'idna>=3.18' 'anyio>=4.10'
# (20 wheels, ~26 MB: the lent machine's transformers is older than the 5.25 that CI tests, and 5.25 needs
# huggingface-hub 2.4 with its httpx2/hf-xet/kernels stack; fla-core is RWKV-6's GPU kernels.)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
spanlab() { python3 -m spanlab "$@"; }
python3 -c "import torch, transformers; print('device setup ok: torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
