

import os as _os
import shutil as _shutil

import pytest as _pytest

# wrk is installed by build/bootstrap.sh: missing in CI is an error (the tests then fail
# where they call it), elsewhere the tests that need it are skipped.
needs_wrk = _pytest.mark.skipif(_shutil.which("wrk") is None and not _os.environ.get("CI"),
                                reason="wrk is not installed (make bootstrap installs it)")
