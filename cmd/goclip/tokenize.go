package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"goclip/clip/tokenizer"
)

// The flags of goclip tokenize.
var (
	vocabFlag = &cli.PathFlag{
		Name:     "vocab",
		Usage:    "vocabulary: HF model `PATH` (vocab.json + merges.txt) or bpe_simple_vocab_16e6.txt.gz",
		EnvVars:  []string{"GOCLIP_VOCAB"},
		Required: true,
		Category: catModel,
	}
	tokenizeContextFlag = &cli.IntFlag{
		Name:     "context-length",
		Usage:    "cut each line to `N` ids, the end token last; 0 for no limit",
		Value:    77,
		EnvVars:  []string{"GOCLIP_CONTEXT_LENGTH"},
		Category: catModel,
	}
)

var tokenizeCommand = &cli.Command{
	Name:      "tokenize",
	Usage:     "print CLIP token ids for each line of standard input",
	ArgsUsage: "< captions.txt",
	Description: `Reads lines of text from standard input and prints, for each line, one JSON
array of token ids: the start token (49406 in OpenAI's vocabulary), the BPE ids,
the end token (49407). A line whose ids do not fit --context-length is cut to that
many ids with the end token kept in the last place, as OpenAI's tokenize does.

--vocab names a Hugging Face model folder (vocab.json and merges.txt, directly or
in its tokenizer/ subfolder), the folder of a trained vocabulary, or OpenAI's
bpe_simple_vocab_16e6.txt.gz (a folder holding it works too). The text is cleaned as OpenAI's simple_tokenizer.py does: HTML
entities unescaped, white space folded, lower case.

Example:
   echo "A dog runs across the grass." | goclip tokenize --vocab openai/clip-vit-base-patch16`,
	Flags:  []cli.Flag{vocabFlag, tokenizeContextFlag},
	Action: runTokenize,
}

func runTokenize(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("tokenize reads standard input and takes no arguments, got %q", c.Args().First())
	}
	ctx := tokenizeContextFlag.Get(c)
	if ctx < 0 {
		return fmt.Errorf("--context-length %d: want 0 (no limit) or more", ctx)
	}
	tok, err := tokenizer.Load(vocabFlag.Get(c))
	if err != nil {
		return err
	}
	return tokenizeLines(tok, ctx, os.Stdin, c.App.Writer)
}

// tokenizeLines writes one JSON array of ids for each line of r.
func tokenizeLines(tok *tokenizer.Tokenizer, ctx int, r io.Reader, w io.Writer) error {
	in := bufio.NewReader(r)
	out := bufio.NewWriter(w)
	var buf []byte
	for {
		line, err := in.ReadString('\n')
		if len(line) > 0 {
			line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
			buf = append(buf[:0], '[')
			for i, id := range tok.EncodeContext(line, ctx) {
				if i > 0 {
					buf = append(buf, ',')
				}
				buf = strconv.AppendInt(buf, int64(id), 10)
			}
			buf = append(buf, ']', '\n')
			if _, werr := out.Write(buf); werr != nil {
				return fmt.Errorf("tokenize: writing: %w", werr)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("tokenize: reading standard input: %w", err)
		}
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("tokenize: writing: %w", err)
	}
	return nil
}
