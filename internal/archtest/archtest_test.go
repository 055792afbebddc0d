package archtest

import (
	"bufio"
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

const module = "goclip"

// pkgInfo is what the source says of one package.
type pkgInfo struct {
	imports  map[string]bool // goclip packages its non-test files import
	nonTest  bool            // it has files other than tests
	importer []string        // packages whose non-test files import it
}

// row is one line of the map: the packages it names and what they may import.
type row struct {
	names     []string // "torch", "internal/testutil", "bench/..."
	any       bool     // "everything above", or the benchmark programs' "libraries"
	testsOnly bool     // imported by tests (and test helpers) only
	allowed   []string // package paths, "internal/*" for all of internal
	planned   bool     // marked *(planned)*: its package may not exist yet
}

var backticked = regexp.MustCompile("`([^`]+)`")

// TestPackageMap reads docs/architecture.md's table "Packages and imports" and the
// imports of every package's non-test files, and wants each package in the table and
// each import allowed by its row.
func TestPackageMap(t *testing.T) {
	root := moduleRoot(t)
	pkgs := readPackages(t, root)
	rows := readMap(t, filepath.Join(root, "docs", "architecture.md"))

	var names []string
	for p := range pkgs {
		names = append(names, p)
	}
	sort.Strings(names)
	listed := map[string]bool{}
	for _, p := range names {
		r, pattern := find(rows, p)
		if r == nil {
			t.Errorf("package %s is not in docs/architecture.md's package map", p)
			continue
		}
		listed[pattern] = true
		info := pkgs[p]
		switch {
		case r.testsOnly:
			for _, by := range info.importer {
				if rb, _ := find(rows, by); rb == nil || !rb.testsOnly {
					t.Errorf("%s is for tests only, but %s imports it", p, by)
				}
			}
		case r.any:
		default:
			for imp := range info.imports {
				if !allows(r, imp) {
					t.Errorf("%s imports %s, which its row in docs/architecture.md does not allow (%v)", p, imp, r.allowed)
				}
			}
		}
	}
	for _, r := range rows {
		for _, n := range r.names {
			if !listed[n] && !r.planned {
				t.Errorf("docs/architecture.md maps %s, which no package is", n)
			}
		}
	}
}

// find is the row naming package p, and the name that matched.
func find(rows []*row, p string) (*row, string) {
	for _, r := range rows {
		for _, n := range r.names {
			if n == p || (strings.HasSuffix(n, "/...") && strings.HasPrefix(p+"/", strings.TrimSuffix(n, "...")) && p != strings.TrimSuffix(n, "/...")) {
				return r, n
			}
		}
	}
	return nil, ""
}

func allows(r *row, imp string) bool {
	for _, a := range r.allowed {
		if a == imp || (a == "internal/*" && path.Dir(imp) == "internal") {
			return true
		}
	}
	return false
}

// readMap parses the table under "## Packages and imports".
func readMap(t *testing.T, file string) []*row {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []*row
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = line == "## Packages and imports"
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) != 3 {
			t.Fatalf("%s: a row of the package map without 3 cells: %q", file, line)
		}
		r := &row{planned: strings.Contains(cells[1], "*(planned)*")}
		for _, m := range backticked.FindAllStringSubmatch(cells[0], -1) {
			r.names = append(r.names, m[1])
		}
		may := regexp.MustCompile(`\([^)]*\)`).ReplaceAllString(cells[2], "") // "(no `torch`)" allows nothing
		switch {
		case strings.Contains(may, "everything above"), strings.Contains(may, "libraries"):
			r.any = true
		case strings.Contains(may, "tests only"):
			r.testsOnly = true
		case strings.TrimSpace(may) == "nothing":
		default:
			for _, m := range backticked.FindAllStringSubmatch(may, -1) {
				r.allowed = append(r.allowed, m[1])
			}
			if len(r.allowed) == 0 {
				t.Fatalf("%s: cannot read what %v may import: %q", file, r.names, cells[2])
			}
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatalf("%s has no package map under \"## Packages and imports\"", file)
	}
	return rows
}

// readPackages parses the imports of every Go file of the module (all build tags).
func readPackages(t *testing.T, root string) map[string]*pkgInfo {
	t.Helper()
	pkgs := map[string]*pkgInfo{}
	get := func(p string) *pkgInfo {
		if pkgs[p] == nil {
			pkgs[p] = &pkgInfo{imports: map[string]bool{}}
		}
		return pkgs[p]
	}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(file string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if file != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "build" || name == "third_party") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(file))
		if err != nil {
			return err
		}
		p := filepath.ToSlash(rel)
		info := get(p)
		if strings.HasSuffix(name, "_test.go") {
			return nil
		}
		info.nonTest = true
		f, err := parser.ParseFile(fset, file, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, im := range f.Imports {
			imp := strings.Trim(im.Path.Value, `"`)
			if rest, ok := strings.CutPrefix(imp, module+"/"); ok {
				info.imports[rest] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, info := range pkgs {
		for imp := range info.imports {
			get(imp).importer = append(get(imp).importer, p)
		}
	}
	return pkgs
}

// moduleRoot is the folder of go.mod above the test's folder.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's folder")
		}
		dir = parent
	}
}
