package main

// --model by Hugging Face id: a Hub cache laid out as huggingface_hub lays it out
// (blobs, snapshots of symlinks, refs), checked against huggingface_hub itself (its
// cache scan and an offline snapshot_download), then read by goclip info.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"goclip/clip"
	"goclip/internal/testutil"
)

// hubFile puts data into the cache repo as huggingface_hub does: blobs/SHA256 and
// snapshots/COMMIT/name a relative symlink to it.
func hubFile(t *testing.T, repo, commit, name string, data []byte) {
	t.Helper()
	sum := sha256.Sum256(data)
	blob := filepath.Join(repo, "blobs", hex.EncodeToString(sum[:]))
	snap := filepath.Join(repo, "snapshots", commit, name)
	for _, d := range []string{filepath.Dir(blob), filepath.Dir(snap)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(blob, data, 0o644); err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(filepath.Dir(snap), blob)
	if err := os.Symlink(rel, snap); err != nil {
		t.Fatal(err)
	}
}

func writeRef(t *testing.T, repo, ref, commit string) {
	t.Helper()
	path := filepath.Join(repo, "refs", ref)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(commit), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestModelByHubID(t *testing.T) {
	fx := testutil.Fixtures(t, "clip-tiny-openai")
	py := testutil.PythonTorch(t, "huggingface_hub")
	cache := filepath.Join(t.TempDir(), "hub")
	repo := filepath.Join(cache, "models--goclip-test--tiny")
	const mainCommit, tagCommit = "1111111111111111111111111111111111111111", "2222222222222222222222222222222222222222"
	cfg, err := os.ReadFile(filepath.Join(fx, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	// v1: another projection width in config.json (info counts from the config only).
	var c map[string]any
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	c["projection_dim"] = 24
	cfgV1 := mustJSON(t, c)
	for _, name := range []string{"model.safetensors", "vocab.json", "merges.txt"} {
		data, err := os.ReadFile(filepath.Join(fx, name))
		if err != nil {
			t.Fatal(err)
		}
		hubFile(t, repo, mainCommit, name, data)
		hubFile(t, repo, tagCommit, name, data) // one blob, two snapshots' links
	}
	hubFile(t, repo, mainCommit, "config.json", cfg)
	hubFile(t, repo, tagCommit, "config.json", cfgV1)
	writeRef(t, repo, "main", mainCommit)
	writeRef(t, repo, "v1", tagCommit)

	// huggingface_hub reads this cache as we wrote it and resolves each revision to the
	// folder goclip resolves it to.
	script := `
import json, sys
from huggingface_hub import scan_cache_dir, snapshot_download
info = scan_cache_dir(sys.argv[1])
if info.warnings:
    raise SystemExit("cache warnings: %s" % info.warnings)
out = {}
for rev in ["main", "v1", "2222222222222222222222222222222222222222"]:
    out[rev] = snapshot_download("goclip-test/tiny", revision=rev, cache_dir=sys.argv[1], local_files_only=True)
out["refs"] = sorted(r for repo in info.repos for rev in repo.revisions for r in rev.refs)
print(json.dumps(out))
`
	var want map[string]any
	if err := json.Unmarshal([]byte(runPython(t, py, script, cache)), &want); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HF_HUB_CACHE", cache)
	for _, rev := range []string{"main", "v1", tagCommit} {
		got, err := clip.HubSnapshot("goclip-test/tiny", rev)
		if err != nil || got != want[rev] {
			t.Errorf("revision %s: goclip %q (%v), huggingface_hub %q", rev, got, err, want[rev])
		}
	}
	if refs, _ := json.Marshal(want["refs"]); string(refs) != `["main","v1"]` {
		t.Errorf("huggingface_hub's refs: %s", refs)
	}

	// goclip info by id equals info on the folder; --revision v1 is v1's config.
	if got, ref := mustGoclip(t, "info", "--model", "goclip-test/tiny", "--json"), mustGoclip(t, "info", "--model", fx, "--json"); got != ref {
		t.Errorf("info by id %s, by folder %s", got, ref)
	}
	v1 := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(v1, cfgV1, 0o644); err != nil {
		t.Fatal(err)
	}
	got, ref := mustGoclip(t, "info", "--model", "goclip-test/tiny", "--revision", "v1", "--json"), mustGoclip(t, "info", "--config", v1, "--json")
	if got != ref || got == mustGoclip(t, "info", "--model", fx, "--json") {
		t.Errorf("info --revision v1 %s, v1's config %s", got, ref)
	}
	// Absent: the error gives the command that downloads it; nothing is fetched.
	_, _, err = runGoclip(t, "info", "--model", "goclip-test/absent")
	if err == nil || !strings.Contains(err.Error(), "hf download goclip-test/absent") || !strings.Contains(err.Error(), cache) {
		t.Errorf("a model not in the cache: %v", err)
	}
}

// TestHubCacheDir: the cache folder for each environment is the one huggingface_hub
// picks.
func TestHubCacheDir(t *testing.T) {
	py := testutil.PythonTorch(t, "huggingface_hub")
	vars := []string{"HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"}
	home := t.TempDir()
	for _, set := range []map[string]string{
		{"HF_HUB_CACHE": "/tmp/a/hub-cache", "HF_HOME": "/tmp/b"},
		{"HF_HOME": "/tmp/b", "XDG_CACHE_HOME": "/tmp/c"},
		{"XDG_CACHE_HOME": "/tmp/c"},
		{},
	} {
		env := []string{"HOME=" + home}
		for _, kv := range os.Environ() {
			k, _, _ := strings.Cut(kv, "=")
			if k != "HOME" && !strings.HasPrefix(k, "HF_") && k != "XDG_CACHE_HOME" {
				env = append(env, kv)
			}
		}
		t.Setenv("HOME", home)
		for _, k := range vars {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
		for k, v := range set {
			t.Setenv(k, v)
			env = append(env, k+"="+v)
		}
		cmd := exec.Command(py, "-c", "from huggingface_hub import constants; print(constants.HF_HUB_CACHE)")
		cmd.Dir, cmd.Env = t.TempDir(), env
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if want, got := strings.TrimSpace(string(out)), clip.HubCacheDir(); got != want {
			t.Errorf("env %v: goclip %s, huggingface_hub %s", set, got, want)
		}
	}
}
