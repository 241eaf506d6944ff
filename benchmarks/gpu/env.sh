# Source on the GPU machine from the repo root, after .gpu/bin/install.sh (vLLM in /tmp/site).
# rollouts runs from the checkout; its two needs missing there travel as wheels in .whl/.
export PYTHONPATH=/tmp/site:/tmp/site2:$PWD
export PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0
export W=${W:-/tmp/gb}
if [ -d .whl ] && [ ! -d /tmp/site2/tenacity ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site2 .whl/*.whl
fi
mkdir -p "$W"
