package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// contextReaders are the methods of *cli.Context that look a flag up by its name.
var contextReaders = map[string]bool{
	"Int": true, "Int64": true, "Uint": true, "Uint64": true, "Float64": true, "String": true,
	"Bool": true, "Path": true, "Duration": true, "Timestamp": true, "Generic": true, "Value": true,
	"StringSlice": true, "IntSlice": true, "Int64Slice": true, "Float64Slice": true, "Uint64Slice": true,
	"IsSet": true, "Count": true,
}

// TestFlagsReadByVariable holds the package to flags.go's rule: a flag is read through
// its variable (seedFlag.Get(c), c.IsSet(seedFlag.Name)), never by a string literal,
// which a typo turns into a silent zero.
func TestFlagsReadByVariable(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	byFile := map[string][]string{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !contextReaders[sel.Sel.Name] {
				return true
			}
			if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				byFile[name] = append(byFile[name], fset.Position(call.Pos()).String()+": "+sel.Sel.Name+"("+lit.Value+")")
			}
			return true
		})
	}
	var names []string
	for name := range byFile {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Errorf("flags read by name, not by their variable:\n  %s", strings.Join(byFile[name], "\n  "))
	}
}
