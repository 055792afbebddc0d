package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"goclip/clip"
	"goclip/clip/tokenizer"
	"goclip/dataset"
	"goclip/internal/rundir"
	"goclip/torch"
	"goclip/train"
)

// The flags of train and finetune's training loop, and train's own.
var (
	epochsFlag      = &cli.IntFlag{Name: "epochs", Usage: "passes over the training split (0 with --max-steps: as many as those steps need)", Value: 10, EnvVars: []string{"GOCLIP_EPOCHS"}, Category: catTrain}
	maxStepsFlag    = &cli.IntFlag{Name: "max-steps", Usage: "stop after this many optimizer steps (0: no limit)", EnvVars: []string{"GOCLIP_MAX_STEPS"}, Category: catTrain}
	gradAccumFlag   = &cli.IntFlag{Name: "grad-accum", Usage: "micro-batches per step (the gradients equal the whole batch's)", Value: 1, EnvVars: []string{"GOCLIP_GRAD_ACCUM"}, Category: catTrain}
	lrFlag          = &cli.Float64Flag{Name: "lr", Usage: "peak learning rate", Value: 5e-4, EnvVars: []string{"GOCLIP_LR"}, Category: catTrain}
	minLRFlag       = &cli.Float64Flag{Name: "min-lr", Usage: "the cosine schedule's final learning rate (0 or more, at most --lr)", EnvVars: []string{"GOCLIP_MIN_LR"}, Category: catTrain}
	warmupFlag      = &cli.IntFlag{Name: "warmup", Usage: "linear warmup steps (0: none)", Value: 100, EnvVars: []string{"GOCLIP_WARMUP"}, Category: catTrain}
	scheduleFlag    = &cli.StringFlag{Name: "schedule", Usage: "learning-rate schedule after warmup: cosine or constant", Value: train.Cosine, EnvVars: []string{"GOCLIP_SCHEDULE"}, Category: catTrain}
	weightDecayFlag = &cli.Float64Flag{Name: "weight-decay", Usage: "AdamW's decoupled weight decay (weight matrices only)", Value: 0.1, EnvVars: []string{"GOCLIP_WEIGHT_DECAY"}, Category: catTrain}
	beta2Flag       = &cli.Float64Flag{Name: "beta2", Usage: "AdamW's beta2", Value: 0.98, EnvVars: []string{"GOCLIP_BETA2"}, Category: catTrain}
	clipGradFlag    = &cli.Float64Flag{Name: "clip-grad", Usage: "clip the gradients' total 2-norm to this (0: no clipping)", Value: 1.0, EnvVars: []string{"GOCLIP_CLIP_GRAD"}, Category: catTrain}
	maxBadStepsFlag = &cli.IntFlag{Name: "max-bad-steps", Usage: "non-finite steps in a row tolerated before the run stops", Value: 10, EnvVars: []string{"GOCLIP_MAX_BAD_STEPS"}, Category: catTrain}
	lossFlag        = &cli.StringFlag{Name: "loss", Usage: "clip (the symmetric contrastive loss) or siglip (the pairwise sigmoid loss with a learnable bias, logit_bias, at -10, and logit_scale started at log 10; ranks exchange text features)",
		Value: train.LossCLIP, EnvVars: []string{"GOCLIP_LOSS"}, Category: catTrain}
	augmentFlag                = &cli.BoolFlag{Name: "augment", Usage: "random resized crops and flips on training images", EnvVars: []string{"GOCLIP_AUGMENT"}, Category: catTrain}
	resumeFlag                 = &cli.BoolFlag{Name: "resume", Usage: "continue the run in --out from checkpoints/last.pt, with the settings of its args.json", EnvVars: []string{"GOCLIP_RESUME"}, Category: catTrain}
	resumeFromFlag             = &cli.StringFlag{Name: "resume-from", Usage: "resume (implies --resume) from `CKPT`: latest (last.pt), best (best.pt), step-N (a --save-every checkpoint) or a checkpoint file; later step checkpoints are removed", EnvVars: []string{"GOCLIP_RESUME_FROM"}, Category: catTrain}
	logEveryFlag               = &cli.IntFlag{Name: "log-every", Usage: "steps between metrics.jsonl rows and progress lines; the host reads the steps' results (and waits for the device) once per such window", Value: 10, EnvVars: []string{"GOCLIP_LOG_EVERY"}, Category: catOutput}
	syncEveryStepFlag          = &cli.BoolFlag{Name: "sync-every-step", Usage: "read each step's loss as soon as it is queued (a host wait per step), for comparison; the same results", EnvVars: []string{"GOCLIP_SYNC_EVERY_STEP"}, Category: catTrain}
	evalEveryFlag              = &cli.IntFlag{Name: "eval-every", Usage: "steps between validation evaluations (0: each epoch)", EnvVars: []string{"GOCLIP_EVAL_EVERY"}, Category: catOutput}
	trainZeroshotDataFlag      = &cli.PathFlag{Name: "zeroshot-data", Usage: "an image folder DIR/<class>/<image> (as goclip zeroshot --data) whose zero-shot accuracy is measured during training: zeroshot_top1/top5 rows in metrics.jsonl", EnvVars: []string{"GOCLIP_ZEROSHOT_DATA"}, Category: catOutput}
	zeroshotEveryFlag          = &cli.IntFlag{Name: "zeroshot-every", Usage: "steps between zero-shot measurements of --zeroshot-data (0: at each validation evaluation); also at the end", EnvVars: []string{"GOCLIP_ZEROSHOT_EVERY"}, Category: catOutput}
	trainZeroshotTemplatesFlag = &cli.PathFlag{Name: "zeroshot-templates", Usage: "prompt templates of --zeroshot-data, one per line with {} (default: OpenAI's 80 ImageNet templates)", EnvVars: []string{"GOCLIP_ZEROSHOT_TEMPLATES"}, Category: catOutput}
	saveEveryFlag              = &cli.IntFlag{Name: "save-every", Usage: "steps between extra checkpoint writes, each also kept as checkpoints/step-N.pt (0: at evaluations only)", EnvVars: []string{"GOCLIP_SAVE_EVERY"}, Category: catOutput}
	keepFlag                   = &cli.IntFlag{Name: "keep", Usage: "keep the newest `K` checkpoints/step-N.pt of --save-every (0: all)", EnvVars: []string{"GOCLIP_KEEP"}, Category: catOutput}
	trainEvalBatchSizeFlag     = &cli.IntFlag{Name: "eval-batch-size", Usage: "evaluation batch (pairs per loss batch)", Value: train.DefaultEvalBatch, EnvVars: []string{"GOCLIP_EVAL_BATCH_SIZE"}, Category: catCompute}
	cacheFlag                  = &cli.PathFlag{Name: "cache", Usage: "a goclip cache folder of preprocessed images (default: the data set's, when built)", EnvVars: []string{"GOCLIP_CACHE"}, Category: catCompute}
	trainBatchSizeFlag         = batchSizeFlag(64, "the global batch: image/caption pairs per optimizer step")
	deviceInputFlag            = &cli.BoolFlag{Name: "device-input", Usage: "on CUDA, batches travel as uint8 crops copied one step ahead from pinned memory on a side stream and are normalised on the GPU (exact; =false: normalised on the host and copied in the step, as on the CPU)",
		Value: true, EnvVars: []string{"GOCLIP_DEVICE_INPUT"}, Category: catCompute}
	tokenizerFlag     = &cli.PathFlag{Name: "tokenizer", Usage: "from scratch: a vocabulary (HF folder, vocab.json's folder or bpe_simple_vocab_16e6.txt.gz) instead of training one", EnvVars: []string{"GOCLIP_TOKENIZER"}, Category: catModel}
	vocabSizeFlag     = &cli.IntFlag{Name: "vocab-size", Usage: "from scratch: tokens of the trained BPE vocabulary (0: sized to the data, 4,096 for small sets)", EnvVars: []string{"GOCLIP_VOCAB_SIZE"}, Category: catModel}
	contextLengthFlag = &cli.IntFlag{Name: "context-length", Usage: "from scratch: text positions (0: the architecture's)", EnvVars: []string{"GOCLIP_CONTEXT_LENGTH"}, Category: catModel}
)

const catTrain = "TRAINING"

// Flags of train and finetune.
var (
	// --data and --out are checked by the commands (a resume takes --data from the run;
	// finetune --dry-run needs neither).
	dataFlag = &cli.PathFlag{Name: "data", Usage: "the data: a data set folder (Kaggle Flickr30k, Karpathy JSON, captions.csv or captions.jsonl), a CSV, TSV or JSONL file, or webdataset shards (data/{00000..00127}.tar, a folder of .tar files, a file listing them, or goclip shard's output); required, except with --resume",
		EnvVars: []string{"GOCLIP_DATA"}, Category: catModel}
	runOutFlag = &cli.PathFlag{Name: "out", Usage: "the run folder (required; created when the run starts: config.json, args.json, metrics.jsonl, learning_curve.png, tb/, checkpoints/, model/)",
		EnvVars: []string{"GOCLIP_OUT"}, Category: catOutput}
	distTimeoutFlag = &cli.DurationFlag{Name: "dist-timeout", Usage: "distributed runs (goclip launch, torchrun): how long ranks wait for each other, at the rendezvous and in every collective, before failing",
		Value: 5 * time.Minute, EnvVars: []string{"GOCLIP_DIST_TIMEOUT"}, Category: catCompute}
)

// trainingFlags are the flags of the training loop, shared by train and finetune;
// --epochs, --lr and --batch-size take the command's defaults (epochsFlag, lrFlag and
// trainBatchSizeFlag hold train's, and read the value of either command).
func trainingFlags(epochs int, lr float64, batch int) []cli.Flag {
	f := []cli.Flag{
		dataFlag, runOutFlag,
		intDefault(epochsFlag, epochs),
		maxStepsFlag,
		gradAccumFlag,
		float64Default(lrFlag, lr),
		minLRFlag,
		warmupFlag,
		scheduleFlag,
		weightDecayFlag,
		beta2Flag,
		clipGradFlag,
		maxBadStepsFlag,
		lockImageFlag, lockTextFlag,
		lossFlag,
		augmentFlag,
		resumeFlag,
		resumeFromFlag,
		logEveryFlag,
		syncEveryStepFlag,
		evalEveryFlag,
		trainZeroshotDataFlag,
		zeroshotEveryFlag,
		trainZeroshotTemplatesFlag,
		saveEveryFlag,
		keepFlag,
		trainEvalBatchSizeFlag,
		cacheFlag,
		intDefault(trainBatchSizeFlag, batch),
		workersFlag, seedFlag, distTimeoutFlag, gradCheckpointingFlag,
		deviceInputFlag,
	}
	f = append(f, dataFlags()...)
	return append(f, computeFlags()...)
}

var trainCommand = &cli.Command{
	Name:      "train",
	Usage:     "train CLIP from scratch (--config) or fine-tune every weight of a model (--model)",
	UsageText: "goclip train (--config NAME | --model DIR) --data DIR --out RUN [flags]",
	Description: `Trains with the contrastive loss (--loss siglip: SigLIP's sigmoid loss),
AdamW (weight decay on weight matrices only), linear warmup and cosine decay,
gradient clipping and, on CUDA, bf16 autocast (fp16 with dynamic loss scaling on
request). It evaluates on the validation split at the end
of each epoch (--eval-every N: every N steps) and writes RUN/: config.json, args.json,
metrics.jsonl, learning_curve.png, tb/ (TensorBoard event files of the same rows:
tensorboard --logdir RUN/tb), checkpoints/last.pt and best.pt, and at the end model/
(an HF folder), model.pt and eval.json (the test split).

--zeroshot-data DIR also measures zero-shot accuracy on an image folder DIR/<class>/<image>
(as goclip zeroshot --data DIR does) every --zeroshot-every N steps (0: at each validation
evaluation) and at the end: zeroshot_top1 and zeroshot_top5 rows in metrics.jsonl.

From scratch (--config NAME), the tokenizer is --tokenizer PATH, or a BPE vocabulary
of --vocab-size tokens trained on the training captions and saved in RUN/tokenizer/.

--save-every N also keeps each of its checkpoints as checkpoints/step-N.pt (the newest
--keep K of them). Ctrl-C finishes the current step, writes the checkpoint and stops;
goclip train --out RUN --resume continues exactly where it stopped (--resume-from best,
step-N or a checkpoint file continues from that one instead), with the settings of
RUN/args.json (flags that would change the model, the data or the optimizer state
cannot be given new values; --epochs, --max-steps, --workers, --threads, --device, --log-every,
--eval-every, --save-every, --keep, --eval-batch-size, --max-bad-steps, --cache,
--dist-timeout and the --zeroshot-* flags can, and are recorded). Every flag and file is checked before the data
is read, and a run that fails before it has written a checkpoint or a metrics row
leaves no folder behind.

Examples:
   goclip train --config tiny --data runs/demo-data/base --out runs/demo-base --epochs 10
   goclip train --model /data/clip-vit-base-patch16 --data /data/flickr30k --out runs/full --lr 1e-5`,
	Flags: append([]cli.Flag{
		modelFlag, revisionFlag, configFlag,
		tokenizerFlag,
		vocabSizeFlag,
		contextLengthFlag,
		lockUnlockedFlag,
	}, trainingFlags(10, 5e-4, 64)...),
	Action: torchAction(runTrain),
}

// trainSetup is what train and finetune share: the device, the data and the options.
type trainSetup struct {
	dev    torch.Device
	prec   clip.Precision
	ds     *dataset.Dataset
	shards *dataset.Shards // webdataset shards to stream (nil: ds's items)
	opts   train.Options
	out    string
	resume bool
	pg     *torch.ProcessGroup // nil: one process
	args   *runArgsFile        // what args.json will hold
	speed  clip.Speed
}

// main reports whether this process writes files (rank 0, or the only process).
func (s *trainSetup) main() bool { return train.IsMainRank(s.pg) }

// close releases the run folder and leaves the process group. After a failed
// command (err), a run folder it created and the run wrote nothing into is removed
// (train.RunFolder.Abandon): a failed start leaves no folder behind.
func (s *trainSetup) close(err error) {
	if err != nil {
		s.opts.Folder.Abandon()
	} else {
		s.opts.Folder.Close()
	}
	s.pg.Close()
}

// checkTraining reads and checks every flag of train and finetune before any work: on
// --resume the run's settings from args.json first (see applyRunArgs), then --out and,
// when needData, --data, the device and precision, the batch and the schedule. Nothing
// is written.
func checkTraining(c *cli.Context, needData bool) (*trainSetup, error) {
	if c.NArg() > 0 {
		return nil, fmt.Errorf("%s takes no arguments (got %q)", c.Command.Name, c.Args().Slice())
	}
	resume := resumeFlag.Get(c) || c.IsSet(resumeFromFlag.Name)
	if resume && runOutFlag.Get(c) == "" {
		return nil, missingFlag(c.Command.Name, "out")
	}
	var prev *runArgsFile
	var changed map[string][2]json.RawMessage
	if resume {
		var err error
		if prev, changed, err = applyRunArgs(c); err != nil {
			return nil, err
		}
	}
	if runOutFlag.Get(c) == "" {
		return nil, missingFlag(c.Command.Name, "out")
	}
	if needData && dataFlag.Get(c) == "" {
		return nil, missingFlag(c.Command.Name, "data")
	}
	dev, err := setupCompute(c)
	if err != nil {
		return nil, err
	}
	prec, err := precisionOf(c, dev)
	if err != nil {
		return nil, err
	}
	if prec == clip.FP16 && dev.Type != torch.CUDADevice {
		return nil, errors.New("--precision fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
	}
	out := runOutFlag.Get(c)
	args, err := newRunArgs(c, dev, map[string]any{deviceFlag.Name: dev.String(), precisionFlag.Name: string(prec)}, prev, changed)
	if err != nil {
		return nil, err
	}
	var augment dataset.AugmentOptions
	if augmentFlag.Get(c) {
		augment = dataset.DefaultAugment()
	}
	opts := train.Options{
		Out: out, Resume: resume,
		Epochs: epochsFlag.Get(c), MaxSteps: maxStepsFlag.Get(c), BatchSize: trainBatchSizeFlag.Get(c), GradAccum: gradAccumFlag.Get(c),
		LR: lrFlag.Get(c), MinLR: minLRFlag.Get(c), Warmup: warmupFlag.Get(c), Schedule: scheduleFlag.Get(c),
		WeightDecay: weightDecayFlag.Get(c), Beta2: beta2Flag.Get(c), ClipGrad: clipGradFlag.Get(c),
		Precision: prec, MaxBadSteps: maxBadStepsFlag.Get(c),
		LogEvery: logEveryFlag.Get(c), EvalEvery: evalEveryFlag.Get(c), EvalBatchSize: trainEvalBatchSizeFlag.Get(c), SaveEvery: saveEveryFlag.Get(c), Keep: keepFlag.Get(c), Lock: lockOf(c), Loss: lossFlag.Get(c),
		ZeroshotEvery: zeroshotEveryFlag.Get(c),
		Workers:       c.Int(workersFlag.Name), Seed: c.Uint64(seedFlag.Name), Augment: augment, HostInput: !deviceInputFlag.Get(c),
		SyncEveryStep: syncEveryStepFlag.Get(c),
		Args:          args, Log: c.App.ErrWriter,
	}
	if opts.Zeroshot, opts.ZeroshotTemplates, err = zeroshotSet(c); err != nil {
		return nil, err
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if resume && c.IsSet(resumeFromFlag.Name) {
		if opts.ResumeFrom, err = train.ResolveCheckpoint(out, resumeFromFlag.Get(c)); err != nil {
			return nil, err
		}
	}
	for name, v := range changed {
		fmt.Fprintf(c.App.ErrWriter, "resume: --%s %s (the run had %s)\n", name, v[1], v[0])
	}
	// The rendezvous (when torchrun or goclip launch started this process) comes last:
	// every rank has checked its flags, and rank 0 alone takes the run folder.
	pinned := strings.Contains(c.String(deviceFlag.Name), ":") // --device cuda:N: every rank on it
	pg, dev, err := train.JoinFromEnv(dev, pinned, c.Duration(distTimeoutFlag.Name))
	if err != nil {
		return nil, err
	}
	opts.ProcessGroup = pg
	return &trainSetup{dev: dev, prec: prec, out: out, resume: resume, args: args, opts: opts, pg: pg, speed: speedOf(c)}, nil
}

// openData reads the data set, printing its report, into the training options.
func (s *trainSetup) openData(c *cli.Context) error {
	td, err := openTrainData(c, c.App.ErrWriter)
	if err != nil {
		return err
	}
	ds := td.ds
	s.ds, s.shards = ds, td.shards
	cache := cacheFlag.Get(c)
	if cache == "" && td.shards == nil {
		cache = dataset.DefaultCacheDir(ds.Root)
	}
	s.opts.CacheDir, s.opts.Report = cache, &ds.Report
	return nil
}

// checkFresh takes the run folder (train.OpenRun): it refuses to start a new run over
// an existing one or in a folder that is not a run, and holds the folder locked until
// close. Ranks other than 0 only check the checkpoint (train.CheckRunFolder).
func (s *trainSetup) checkFresh() error {
	if !s.main() {
		return train.CheckRunFolder(s.out, s.resume)
	}
	rf, err := train.OpenRun(s.out, s.resume)
	if err != nil {
		return err
	}
	s.opts.Folder = rf
	return nil
}

// job is a Job over the data set's splits.
func (s *trainSetup) job(m *clip.Model, tok *tokenizer.Tokenizer, tokDir string) train.Job {
	m.SetSpeed(s.speed)
	return train.Job{Model: m, Tokenizer: tok, TokenizerDir: tokDir,
		Train: s.ds.Split(dataset.Train), Val: s.ds.Split(dataset.Val), Test: s.ds.Split(dataset.Test), TrainShards: s.shards}
}

// run runs the loop with SIGINT and SIGTERM cancelling it, and reports the outcome.
func (s *trainSetup) run(c *cli.Context, job train.Job) (*train.Result, error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := train.Run(ctx, job, s.opts)
	var ie *train.InterruptedError
	if errors.As(err, &ie) {
		return nil, fmt.Errorf("%w\ncontinue it with: goclip %s --out %s --resume", err, c.Command.Name, s.out)
	}
	if err != nil {
		return nil, err
	}
	if !s.main() {
		return res, nil // rank 0 reports
	}
	w := c.App.ErrWriter
	if s.opts.Report.Skipped() > 0 {
		fmt.Fprintf(w, "data: %s\n", s.opts.Report.Summary())
	}
	fmt.Fprintf(w, "done: %s (%d skipped) in %s; best validation loss %.4f\n", train.Plural(res.Steps, "step"), res.Skipped, res.Duration.Round(1e9), res.BestValLoss)
	files := []string{rundir.ModelDir + "/", rundir.ModelPT, rundir.MetricsFile, rundir.CurveFile, rundir.TensorBoard + "/", rundir.Checkpoints + "/"}
	if job.LoRA != nil {
		files = append([]string{rundir.AdapterDir + "/"}, files...)
	}
	fmt.Fprintf(w, "run folder %s: %s\n", s.out, strings.Join(files, ", "))
	return res, nil
}

func runTrain(c *cli.Context) (err error) {
	s, err := checkTraining(c, true)
	if err != nil {
		return err
	}
	defer func() { s.close(err) }()
	modelDir, err := modelPath(c)
	if err != nil {
		return err
	}
	config := c.String(configFlag.Name)
	if (modelDir == "") == (config == "") {
		return errors.New("give --config NAME (from scratch) or --model DIR (full fine-tuning), one of them")
	}
	var (
		cfg clip.Config
		pre *clip.Pretrained
	)
	if modelDir != "" {
		if pre, err = clip.FindPretrained(modelDir, true); err != nil {
			return err
		}
	} else if cfg, err = loadArchitecture(config); err != nil {
		return err
	}
	if err := s.checkFresh(); err != nil {
		return err
	}
	if err := s.openData(c); err != nil {
		return err
	}
	var (
		m      *clip.Model
		tok    *tokenizer.Tokenizer
		tokDir string
	)
	if modelDir != "" {
		tok, tokDir = pre.Tokenizer, pre.Source.Tokenizer
		if m, _, err = pre.Load(s.dev); err != nil {
			return err
		}
	} else {
		tokDir = train.RunDir(s.out).Tokenizer()
		tok, err = train.ScratchTokenizer(train.ScratchVocabulary{Run: s.out, Resume: s.resume, Path: tokenizerFlag.Get(c),
			Data: s.ds, Streamed: s.shards != nil, Size: vocabSizeFlag.Get(c), Save: s.main(), Log: c.App.ErrWriter})
		if err != nil {
			return err
		}
		if m, err = train.NewScratchModel(cfg, tok, contextLengthFlag.Get(c), c.Uint64(seedFlag.Name), s.dev); err != nil {
			return err
		}
	}
	defer m.Free()
	_, err = s.run(c, s.job(m, tok, tokDir))
	return err
}

// zeroshotSet reads --zeroshot-data and --zeroshot-templates (nil, nil without them).
func zeroshotSet(c *cli.Context) (*dataset.ImageFolder, []string, error) {
	dir := trainZeroshotDataFlag.Get(c)
	if dir == "" {
		for _, name := range []string{"zeroshot-every", "zeroshot-templates"} {
			if c.IsSet(name) {
				return nil, nil, fmt.Errorf("--%s needs --zeroshot-data DIR", name)
			}
		}
		return nil, nil, nil
	}
	folder, err := dataset.ReadImageFolder(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("--zeroshot-data: %w", err)
	}
	var templates []string
	if f := trainZeroshotTemplatesFlag.Get(c); f != "" {
		if templates, err = train.ReadTemplates(f); err != nil {
			return nil, nil, fmt.Errorf("--zeroshot-templates: %w", err)
		}
	}
	return folder, templates, nil
}
