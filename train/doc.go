// Package train is goclip's training loop: AdamW over parameter groups (weight decay on
// matrices only), a linear-warmup cosine (or constant) learning-rate schedule, gradient
// accumulation that reproduces the larger batch exactly, gradient-norm clipping, mixed
// precision (bf16 autocast, or fp16 autocast with a dynamic loss scale),
// periodic evaluation with DESIGN.md's protocol (Evaluate, Retrieval), and the files a
// run writes: config.json, args.json, metrics.jsonl, learning_curve.png, resumable
// checkpoints and the final model.
//
// One entry point, Run, serves training from scratch, full fine-tuning and LoRA
// fine-tuning: the caller builds the model (NewScratchModel, or a loaded one) and, for
// LoRA, injects the adapter and names it in Job.LoRA; everything else is the same loop.
// Run's trainer prepares the run (options, run folder, resume, ranks, loader), takes the
// epochs' steps (trainEpoch), applies one evaluate/save policy (checkpoint) and tells
// its observers, the progress report and the metrics files, of every step and
// evaluation. RunDir names every file of the run folder.
//
// # Exact Resume
//
// checkpoints/last.pt holds everything the loop's future depends on: the trained
// tensors, the AdamW moments and step, the schedule position, the loss scaler, the torch
// RNG states, the data seed and the data position (epoch and batch). The loader's batches
// are a function of (seed, epoch, index) only, so a run interrupted and resumed with
// Options.Resume ends exactly where an uninterrupted run ends (CPU, fp32, same threads).
// Cancelling the context passed to Run (the CLI does so on SIGINT and SIGTERM) finishes
// the current step, writes the checkpoint and returns an *InterruptedError.
//
// # Gradient Accumulation
//
// CLIP's loss contrasts every image with every caption of the batch, so it does not
// split into a sum over micro-batches. With GradAccum > 1 the loop first embeds every
// micro-batch without gradients, then, per micro-batch, recomputes that micro-batch's
// embeddings with gradients and back-propagates the loss of the whole batch through them
// (the others held fixed, the logit scale live in the first micro-batch only). The
// gradients are those of the full batch; activations are held for one micro-batch at a
// time. The price is one extra forward pass per micro-batch.
//
// # Error Handling
//
// Each step runs inside a torch.Scope and torch.Try: a tensor panic (a bad shape, an
// out-of-memory) becomes the error Run returns. Panics (*torch.Error) stay inside tensor
// maths (the step, the losses' unexported cores, collectives within them); every
// exported function returns an error, recovering at its entry where it runs tensor
// code. A non-finite loss or gradient norm is not
// an error: the step is skipped and counted; more than Options.MaxBadSteps in a row stop
// the run with a *BadStepsError, the last good checkpoint left in place. In fp16 an
// overflow of the scaled gradients halves the loss scale and skips the step (LossScaler).
//
// # Host Reads
//
// A step does not wait for the device. Whether it is skipped (a non-finite loss, a
// non-finite gradient norm, an fp16 overflow) is decided on the device, and so is what
// follows: AdamW skips its update there (found_inf, with a step counter on the device so
// that bias correction counts applied updates only), the loss scale backs off or grows
// there, the logit-scale clamp leaves a skipped step's value alone. Each step leaves its
// loss, gradient norm, outcome and loss scale in a small device tensor; the loop reads
// the pending steps' tensors in one host read when a logging window ends (LogEvery
// steps, the run's last), before an evaluation, zero-shot measurement or checkpoint,
// at the end of an epoch and on an interrupt, and then applies to each step what it
// applied when it read every step: the bad-step count, the progress report and
// metrics rows, Options.AfterStep. The results and the files are the same as reading
// every step (Options.SyncEveryStep, --sync-every-step, which does that for
// comparison); what a user sees differ in when: the progress bar moves once per window,
// and a run of bad steps beyond MaxBadSteps stops the run at the next read, the error
// naming the step where the limit was passed (the steps taken after it, up to the read,
// are not reported; each applied or skipped its update by its own outcome, and no
// checkpoint is written after them). Options.AfterStep needs every
// step's loss, so a run with it reads every step. The learning-rate schedule depends on
// the steps taken, skipped or not, and needs no read.
//
// # Threads
//
// libtorch keeps grad mode and autocast per OS thread, so Run locks its goroutine to its
// thread for the whole run.
package train
