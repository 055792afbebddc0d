package dataset

// Image folders in ImageNet's layout, for classification: DIR/<class>/<image>.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ImageFolderExts are the extensions (lower case) of the files ReadImageFolder takes as
// images; other files are ignored.
var ImageFolderExts = map[string]bool{".jpg": true, ".jpeg": true, ".png": true, ".webp": true, ".gif": true, ".bmp": true}

// ClassesFile is the optional file of an image folder that names its classes.
const ClassesFile = "classes.txt"

// ImageFolder is a classification set: Items[i] (no captions) is of class Labels[i],
// an index into Classes.
type ImageFolder struct {
	Dir     string
	Classes []string // class names, in the order of the sorted class folders
	Folders []string // the class folders' names, sorted
	Items   []Item
	Labels  []int
}

// ReadImageFolder reads dir laid out as DIR/<class folder>/<image>, the layout of
// ImageNet and torchvision's ImageFolder: the class folders are dir's subfolders in
// sorted name order, each class's images the files under its folder (recursively) with
// an ImageFolderExts extension, in sorted path order (files directly in dir and
// hidden folders are ignored). A class's name is its folder's
// name with "_" read as a space, unless dir holds classes.txt: then its i-th non-empty
// line (trimmed) names the i-th class folder, and it must name each exactly once. A
// class folder without images is an error naming it.
func ReadImageFolder(dir string) (*ImageFolder, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("image folder: %w", err)
	}
	f := &ImageFolder{Dir: dir}
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			f.Folders = append(f.Folders, e.Name())
		}
	}
	sort.Strings(f.Folders)
	if len(f.Folders) == 0 {
		return nil, fmt.Errorf("image folder %s has no class folders (DIR/<class>/<image>)", dir)
	}
	names, err := readClassNames(filepath.Join(dir, ClassesFile), len(f.Folders))
	if err != nil {
		return nil, err
	}
	for label, folder := range f.Folders {
		if names != nil {
			f.Classes = append(f.Classes, names[label])
		} else {
			f.Classes = append(f.Classes, strings.ReplaceAll(folder, "_", " "))
		}
		var paths []string
		root := filepath.Join(dir, folder)
		err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && ImageFolderExts[strings.ToLower(filepath.Ext(p))] {
				paths = append(paths, p)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("image folder: %w", err)
		}
		if len(paths) == 0 {
			return nil, fmt.Errorf("class folder %s holds no images (%s)", root, extList())
		}
		sort.Strings(paths)
		for _, p := range paths {
			rel, _ := filepath.Rel(dir, p)
			f.Items = append(f.Items, Item{Image: p, Name: filepath.ToSlash(rel), Split: Test})
			f.Labels = append(f.Labels, label)
		}
	}
	seen := map[string]string{}
	for i, c := range f.Classes {
		if prev, ok := seen[c]; ok {
			return nil, fmt.Errorf("image folder %s: class folders %s and %s have the same name %q", dir, prev, f.Folders[i], c)
		}
		seen[c] = f.Folders[i]
	}
	return f, nil
}

// readClassNames reads classes.txt at path, which must hold want names; nil when
// there is no such file.
func readClassNames(path string, want int) ([]string, error) {
	file, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var names []string
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			names = append(names, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(names) != want {
		return nil, fmt.Errorf("%s names %d classes but the folder has %d class folders (one name per line, in sorted folder order)", path, len(names), want)
	}
	return names, nil
}

func extList() string {
	var exts []string
	for e := range ImageFolderExts {
		exts = append(exts, e)
	}
	sort.Strings(exts)
	return strings.Join(exts, ", ")
}
