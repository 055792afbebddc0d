// Package serialize turns checkpoint files into raw tensors and back, in pure
// Go: safetensors files (single or sharded), and the PyTorch `torch.save`
// format (.pt, .bin), both the zip archive that torch writes since 1.6 and,
// for reading, the older stream format.
//
// The package knows nothing of libtorch. A tensor here is a [RawTensor]: a
// dtype named with the safetensors spelling ("F32", "BF16", ...), a shape and
// its elements as little-endian bytes in C (row-major) order. The torch
// package wraps these functions to build real tensors.
//
// # Safetensors
//
// [ReadSafetensors] reads a whole file, [ReadSafetensorsHeader] only its
// header, and [OpenSafetensors] gives tensor-by-tensor access (with
// [SafetensorsFile.ReadInto] reading a tensor straight into memory the caller
// owns, so that a 600 MB checkpoint never sits in memory twice). The header is
// validated against the file before any data is read: header length, JSON
// shape, known dtypes, numel*size equal to each byte range, ranges that start
// at 0, follow each other without gap or overlap and end exactly at the end of
// the file. [WriteSafetensors] writes the layout of the reference
// implementation (tensors ordered by decreasing element size and then by
// name, the header padded with spaces to a multiple of 8 bytes), so every
// tensor's data is aligned to its element size. [ReadSafetensorsIndex] and
// [ReadSafetensorsSharded] handle `model.safetensors.index.json`.
//
// # PyTorch files
//
// [WritePT] writes a state dict (an OrderedDict of tensors) and
// [WritePTObject] any tree of dicts, lists, tuples, ints, floats, strings,
// bools, None and tensors. Both write the zip layout of torch.save
// (`archive/data.pkl`, `archive/data/N`, `archive/byteorder`,
// `archive/version`, each record 64-byte aligned) with a protocol-2 pickle
// that uses only what `torch.load(path, weights_only=True)` accepts. One
// limit comes from torch rather than from this package: the weights_only
// unpickler of torch 1.13 has no opcode for Python floats, so a checkpoint
// holding float values loads with weights_only=True only in torch 2.x (ints,
// strings, bools, None, containers and tensors load in both).
//
// [ReadPT] and [ReadPTObject] read files written by torch.save (zip or the
// legacy pre-1.6 stream format) or by this package. The pickle is interpreted,
// never executed, and only what torch.load(path, weights_only=True) accepts is
// read: tensors (rebuilt from their storages), Parameters, OrderedDicts,
// dicts, lists, tuples, sets, torch.Size, bytes and plain values; torch.device
// and dtypes become an [*Object] naming them. Any other global (a class or
// function a pickle names, such as posix.system) is an error wherever it sits
// in the file, as it is for torch.
//
// # Limits
//
// Files are untrusted, so the work a reader does is bounded by the file:
//   - every size, stride and offset is checked for overflow;
//   - zip records (zip64 included) must lie inside the file, and a storage
//     must lie inside its record, before any memory is allocated for it;
//   - the unpickler counts the values it copies against a budget of 16 per
//     byte of pickle, and converts every shared container (tuples too) once,
//     so a few bytes of memo references cannot grow exponentially;
//   - tensors are read as contiguous copies, so a view (a stride-0 expand,
//     say) can be far larger than its storage: a tensor may take at most 4
//     times its storage's bytes plus 1 MiB, and a file's tensors together at
//     most 4 times the file's bytes plus 16 MiB; a view beyond either is
//     refused, naming the tensor. Real state dicts and checkpoints hold each
//     storage about once.
//
// # Error Handling
//
// Every function returns an error that names the file and, where one is at
// fault, the tensor key; nothing panics on malformed input.
package serialize
