package clip

// Models by Hugging Face id, found in the local Hub cache exactly as huggingface_hub
// lays it out (nothing is downloaded):
//
//	$HF_HUB_CACHE (else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
//	~/.cache/huggingface/hub)
//	  models--ORG--NAME/
//	    refs/main                 the commit hash the branch or tag points at
//	    snapshots/COMMIT/...      the files of that commit

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// HubCacheDir is the Hub cache folder huggingface_hub uses with this environment.
func HubCacheDir() string {
	if d := os.Getenv("HF_HUB_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("HF_HOME"); d != "" {
		return filepath.Join(d, "hub")
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "huggingface", "hub")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".cache", "huggingface", "hub")
	}
	return filepath.Join(home, ".cache", "huggingface", "hub")
}

// hubID is a Hub model id: NAME or ORG/NAME.
var hubID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$`)

// commitHash is a full commit hash, which names a snapshot folder directly.
var commitHash = regexp.MustCompile(`^[0-9a-f]{40}$`)

// IsHubID reports whether s has the form of a Hub model id (ORG/NAME or NAME).
func IsHubID(s string) bool { return hubID.MatchString(s) && !strings.Contains(s, "..") }

// HubSnapshot is the local folder of model id at revision (a branch, a tag or a commit
// hash; "" is main) in the Hub cache. When the cache does not hold it, the error gives
// the command that downloads it.
func HubSnapshot(id, revision string) (string, error) {
	if !IsHubID(id) {
		return "", fmt.Errorf("%q is not a Hugging Face model id (ORG/NAME)", id)
	}
	if revision == "" {
		revision = "main"
	}
	cache := HubCacheDir()
	repo := filepath.Join(cache, "models--"+strings.ReplaceAll(id, "/", "--"))
	commit := revision
	if !commitHash.MatchString(revision) {
		data, err := os.ReadFile(filepath.Join(repo, "refs", filepath.FromSlash(revision)))
		if err != nil {
			return "", notCached(id, revision, cache)
		}
		commit = strings.TrimSpace(string(data))
	}
	dir := filepath.Join(repo, "snapshots", commit)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", notCached(id, revision, cache)
	}
	return dir, nil
}

func notCached(id, revision, cache string) error {
	cmd := "hf download " + id + ` --include "*.json" "*.txt" "*.safetensors"`
	if revision != "main" {
		cmd += " --revision " + revision
	}
	return fmt.Errorf("%s (revision %s) is not a local folder and not in the Hugging Face cache %s; download it with:\n   %s",
		id, revision, cache, cmd)
}
