#!/usr/bin/env bash
# The command line: the same features as the Python client.
#
#   GREYELEPHANT_BASE_URL=http://127.0.0.1:8000/v1 bash examples/cli.sh
#
# Exits non-zero if a command fails. Installed, the command is `greyelephant`; here it
# runs as `python -m greyelephant` ($PYTHON, default python3) so it works from a checkout.
set -euo pipefail
ge() { "${PYTHON:-python3}" -m greyelephant "$@"; }

ge models

# Answer on stdout, steering report on stderr.
ge chat "What must I see in Paris?" --avoid "Eiffel Tower|Tour Eiffel" --prefer Louvre \
  --strategies directive,logits --max-tokens 30 --temperature 0 --fail-on-violation

# Streamed as it is generated.
ge chat "Describe an elephant." --avoid "pink elephant" --prefer "grey elephant" \
  --stream --max-tokens 30 --temperature 0

# The whole response as JSON (text, usage, steering report), e.g. for jq.
ge complete "The most famous landmark in Paris is the" --avoid "Eiffel Tower" \
  --strategies logits --max-tokens 12 --temperature 0 --json > /dev/null

# Errors: the server's message on stderr, exit status 1.
if ge chat "hi" --model no-such-model --max-retries 0 2> /dev/null; then
  echo "expected a 404" >&2
  exit 1
fi
echo "ok"
