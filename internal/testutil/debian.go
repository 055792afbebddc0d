package testutil

import (
	"fmt"
	"strings"
	"testing"
)

// DebianPython is PythonTorch for Debian's own interpreter, /usr/bin/python3 with
// Debian's packages (python3-pil: PIL built on the system's libjpeg-turbo, which
// third_party/apt.sh --test installs), for comparisons with what Debian's libraries
// compute. It checks, once per test binary, that the interpreter imports the modules
// named from /usr/lib/python3/dist-packages, not a copy installed by pip; when it
// cannot, the test is skipped, or fails under CI=true.
func DebianPython(t testing.TB, modules ...string) string {
	t.Helper()
	const py = "/usr/bin/python3"
	key := "debian\x00" + strings.Join(modules, ",")
	c := pythonCheckOf(key)
	c.once.Do(func() {
		script := "import sys, importlib\nfor m in sys.argv[1:]:\n" +
			"    try:\n        f = importlib.import_module(m).__file__ or ''\n" +
			"    except Exception as e:\n        sys.exit(repr(e))\n" +
			"    if not f.startswith('/usr/lib/python3/dist-packages/'):\n" +
			"        sys.exit(m + ' comes from ' + f + ', not from a Debian package')\n"
		c.err = runPython(py, append([]string{"-I", "-c", script}, modules...)...)
	})
	if c.err != nil {
		missing(t, fmt.Sprintf("Debian's %s cannot import %s from Debian's packages (third_party/apt.sh --test installs python3-pil; make test runs it): %v",
			py, strings.Join(modules, ", "), c.err))
	}
	return py
}
