# Source on the GPU machine from the repo root, after .gpu/bin/install.sh (vLLM in /tmp/site).
# rollouts runs from the checkout; its needs missing there (tenacity, asyncio-throttle, orjson)
# travel as wheels in .whl/.
export PYTHONPATH=/tmp/site:/tmp/site2:$PWD
export PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0
export W=${W:-/tmp/gb}
if [ -d .whl ] && [ ! -f /tmp/site2/.installed-$(ls .whl | md5sum | cut -c1-8) ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site2 .whl/*.whl
  touch /tmp/site2/.installed-$(ls .whl | md5sum | cut -c1-8)
fi
mkdir -p "$W"
