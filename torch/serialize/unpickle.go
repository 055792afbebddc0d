package serialize

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Tuple is a Python tuple. [ReadPTObject] returns tuples as Tuple and lists
// as []any; [WritePTObject] writes a Tuple as a tuple.
type Tuple []any

// Object is a Python object that this package does not model: an instance
// of class Class made by calling it with Args (REDUCE or NEWOBJ) and given
// State (BUILD), or the bare class or function itself when Args is nil.
type Object struct {
	Class string
	Args  []any
	State any
}

// Pickle opcodes (protocols 0 to 5) that this package reads or writes.
const (
	opMark           = '('
	opStop           = '.'
	opPop            = '0'
	opPopMark        = '1'
	opDup            = '2'
	opBinFloat       = 'G'
	opBinInt         = 'J'
	opBinInt1        = 'K'
	opBinInt2        = 'M'
	opNone           = 'N'
	opBinPersID      = 'Q'
	opReduce         = 'R'
	opBinString      = 'T'
	opShortBinString = 'U'
	opBinUnicode     = 'X'
	opAppend         = 'a'
	opBuild          = 'b'
	opGlobal         = 'c'
	opDict           = 'd'
	opEmptyDict      = '}'
	opAppends        = 'e'
	opBinGet         = 'h'
	opLongBinGet     = 'j'
	opList           = 'l'
	opEmptyList      = ']'
	opBinPut         = 'q'
	opLongBinPut     = 'r'
	opSetItem        = 's'
	opTuple          = 't'
	opEmptyTuple     = ')'
	opSetItems       = 'u'
	opBinBytes       = 'B'
	opShortBinBytes  = 'C'
	opProto          = 0x80
	opNewObj         = 0x81
	opTuple1         = 0x85
	opTuple2         = 0x86
	opTuple3         = 0x87
	opNewTrue        = 0x88
	opNewFalse       = 0x89
	opLong1          = 0x8a
	opLong4          = 0x8b
	opShortBinUni    = 0x8c
	opBinUnicode8    = 0x8d
	opBinBytes8      = 0x8e
	opEmptySet       = 0x8f
	opAddItems       = 0x90
	opFrozenSet      = 0x91
	opNewObjEx       = 0x92
	opStackGlobal    = 0x93
	opMemoize        = 0x94
	opFrame          = 0x95
	opByteArray8     = 0x96
)

// pyGlobal is a class or function named by GLOBAL, not yet called.
type pyGlobal struct{ module, name string }

func (g pyGlobal) String() string { return g.module + "." + g.name }

// pyList and pyDict are mutable while unpickling; pointers keep memo
// references shared, as in Python.
type pyList struct{ items []any }

type pyDict struct {
	keys, vals []any
	index      map[any]int
	ordered    bool // an OrderedDict or Counter, which BUILD may give attributes
}

func newDict() *pyDict { return &pyDict{index: map[any]int{}} }

func (d *pyDict) set(k, v any) error {
	switch k.(type) {
	case string, int64, bool, float64, nil:
	default:
		return fmt.Errorf("unsupported dict key of type %s", pyTypeName(k))
	}
	if i, ok := d.index[k]; ok {
		d.vals[i] = v
		return nil
	}
	d.index[k] = len(d.keys)
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
	return nil
}

// storageRef is a torch storage named by a persistent id: its dtype, its
// length in elements and, for a legacy view, its offset into the root.
type storageRef struct {
	key    string
	dtype  DType
	numel  int64
	offset int64       // elements, legacy views only
	root   *storageRef // the storage a legacy view is cut from; nil for a root
	refs   int         // tensors built on a root, for releasing its bytes early
}

// base is the root storage that owns the bytes.
func (s *storageRef) base() *storageRef {
	if s.root != nil {
		return s.root
	}
	return s
}

// tensorRef is a tensor rebuilt by _rebuild_tensor(_v2): a strided view of
// a storage.
type tensorRef struct {
	storage *storageRef
	offset  int64
	size    []int64
	stride  []int64
}

// pickleInput reads a pickle stream of known maximum length, so that no
// length field can make it allocate more than the input holds.
type pickleInput struct {
	r    *bufio.Reader
	pos  int64
	size int64
}

func (in *pickleInput) byte() (byte, error) {
	if in.pos >= in.size {
		return 0, io.ErrUnexpectedEOF
	}
	b, err := in.r.ReadByte()
	if err != nil {
		return 0, unexpected(err)
	}
	in.pos++
	return b, nil
}

func (in *pickleInput) bytes(n uint64) ([]byte, error) {
	if n > uint64(in.size-in.pos) {
		return nil, io.ErrUnexpectedEOF
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(in.r, b); err != nil {
		return nil, unexpected(err)
	}
	in.pos += int64(n)
	return b, nil
}

func (in *pickleInput) line() (string, error) {
	var sb strings.Builder
	for {
		b, err := in.byte()
		if err != nil {
			return "", err
		}
		if b == '\n' {
			return sb.String(), nil
		}
		sb.WriteByte(b)
	}
}

func (in *pickleInput) uint(n int) (uint64, error) {
	b, err := in.bytes(uint64(n))
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// unpickler interprets a pickle without executing anything: classes and
// functions are looked up in a fixed table (see call).
//
// Its work is bounded by its input: every opcode and every element an
// opcode copies or visits counts against a budget proportional to the
// pickle's length (see charge), so that a short pickle cannot make it run
// or allocate for long, whatever it repeats through the memo.
type unpickler struct {
	in             *pickleInput
	stack          []any
	marks          []int
	memo           map[uint64]any
	persistentLoad func(pid any) (any, error)
	work, maxWork  int64
}

// workPerByte and workSlack size an unpickler's budget: a pickle written by
// torch.save or by this package touches each value a few times, so 16 units
// a byte (plus a floor for tiny pickles) is far above any real file.
const (
	workPerByte = 16
	workSlack   = 1 << 20
)

func newUnpickler(r io.Reader, size int64, persistentLoad func(pid any) (any, error)) *unpickler {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	return newUnpicklerOn(&pickleInput{r: br, size: size}, persistentLoad)
}

// newUnpicklerOn reads one pickle from in (a stream may hold several).
func newUnpicklerOn(in *pickleInput, persistentLoad func(pid any) (any, error)) *unpickler {
	return &unpickler{
		in:             in,
		memo:           map[uint64]any{},
		persistentLoad: persistentLoad,
		maxWork:        workPerByte*max(in.size, 0) + workSlack,
	}
}

// charge counts n units of work (elements copied or visited) against the
// budget.
func (u *unpickler) charge(n int) error {
	u.work += int64(n)
	if u.work > u.maxWork {
		return fmt.Errorf("the pickle copies more than %d values, far more than its %d bytes can describe (a crafted file?)", u.maxWork, u.in.size)
	}
	return nil
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	floor := 0
	if len(u.marks) > 0 {
		floor = u.marks[len(u.marks)-1]
	}
	if len(u.stack) <= floor {
		return nil, errors.New("stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	v, err := u.pop()
	if err == nil {
		u.push(v)
	}
	return v, err
}

// popMark pops everything above the last MARK, and the mark.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, errors.New("no MARK on the stack")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	if err := u.charge(len(u.stack) - m); err != nil {
		return nil, err
	}
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

// load runs the pickle to its STOP and returns the object it built.
func (u *unpickler) load() (any, error) {
	for {
		at := u.in.pos
		op, err := u.in.byte()
		if err != nil {
			return nil, fmt.Errorf("pickle truncated at byte %d", at)
		}
		done, err := u.step(op)
		if err == nil {
			err = u.charge(1)
		}
		if err != nil {
			return nil, fmt.Errorf("pickle opcode 0x%02x at byte %d: %w", op, at, err)
		}
		if done {
			if len(u.marks) != 0 || len(u.stack) != 1 {
				return nil, fmt.Errorf("pickle ends with %d values and %d marks on the stack", len(u.stack), len(u.marks))
			}
			return u.stack[0], nil
		}
	}
}

// step runs one opcode; done is true at STOP.
func (u *unpickler) step(op byte) (done bool, err error) {
	in := u.in
	switch op {
	case opProto:
		_, err = in.byte()
	case opFrame:
		_, err = in.uint(8)
	case opStop:
		return true, nil
	case opMark:
		u.marks = append(u.marks, len(u.stack))
	case opPop:
		_, err = u.pop()
	case opPopMark:
		_, err = u.popMark()
	case opDup:
		var v any
		if v, err = u.top(); err == nil {
			u.push(v)
		}
	case opNone:
		u.push(nil)
	case opNewTrue:
		u.push(true)
	case opNewFalse:
		u.push(false)
	case opBinInt:
		var v uint64
		if v, err = in.uint(4); err == nil {
			u.push(int64(int32(uint32(v))))
		}
	case opBinInt1:
		var v uint64
		if v, err = in.uint(1); err == nil {
			u.push(int64(v))
		}
	case opBinInt2:
		var v uint64
		if v, err = in.uint(2); err == nil {
			u.push(int64(v))
		}
	case opLong1, opLong4:
		width := 1
		if op == opLong4 {
			width = 4
		}
		var n uint64
		var b []byte
		if n, err = in.uint(width); err == nil {
			if b, err = in.bytes(n); err == nil {
				u.push(decodeLong(b))
			}
		}
	case opBinFloat:
		var b []byte
		if b, err = in.bytes(8); err == nil {
			u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
		}
	case opBinUnicode, opShortBinUni, opBinUnicode8, opBinString, opShortBinString:
		width := map[byte]int{opBinUnicode: 4, opShortBinUni: 1, opBinUnicode8: 8, opBinString: 4, opShortBinString: 1}[op]
		var n uint64
		var b []byte
		if n, err = in.uint(width); err == nil {
			if b, err = in.bytes(n); err == nil {
				if op == opBinString || op == opShortBinString {
					u.push(latin1(b)) // Python 2 str, read as latin-1 text
				} else if !utf8.Valid(b) {
					err = errors.New("string is not valid UTF-8")
				} else {
					u.push(string(b))
				}
			}
		}
	case opBinBytes, opShortBinBytes, opBinBytes8, opByteArray8:
		width := map[byte]int{opBinBytes: 4, opShortBinBytes: 1, opBinBytes8: 8, opByteArray8: 8}[op]
		var n uint64
		var b []byte
		if n, err = in.uint(width); err == nil {
			if b, err = in.bytes(n); err == nil {
				u.push(b)
			}
		}
	case opEmptyTuple:
		u.push(Tuple{})
	case opTuple:
		var items []any
		if items, err = u.popMark(); err == nil {
			u.push(Tuple(items))
		}
	case opTuple1, opTuple2, opTuple3:
		n := int(op-opTuple1) + 1
		t := make(Tuple, n)
		for i := n - 1; i >= 0 && err == nil; i-- {
			t[i], err = u.pop()
		}
		u.push(t)
	case opEmptyList:
		u.push(&pyList{})
	case opList:
		var items []any
		if items, err = u.popMark(); err == nil {
			u.push(&pyList{items: items})
		}
	case opAppend:
		var v, l any
		if v, err = u.pop(); err == nil {
			if l, err = u.top(); err == nil {
				err = appendTo(l, v)
			}
		}
	case opAppends:
		var items []any
		var l any
		if items, err = u.popMark(); err == nil {
			if l, err = u.top(); err == nil {
				for _, v := range items {
					if err = appendTo(l, v); err != nil {
						break
					}
				}
			}
		}
	case opEmptySet:
		u.push(&pyList{})
	case opAddItems:
		var items []any
		var s any
		if items, err = u.popMark(); err == nil {
			if s, err = u.top(); err == nil {
				err = appendTo(s, items...)
			}
		}
	case opFrozenSet:
		var items []any
		if items, err = u.popMark(); err == nil {
			u.push(&pyList{items: items})
		}
	case opEmptyDict:
		u.push(newDict())
	case opDict:
		var items []any
		if items, err = u.popMark(); err == nil {
			d := newDict()
			if err = setItems(d, items); err == nil {
				u.push(d)
			}
		}
	case opSetItem:
		var k, v, d any
		if v, err = u.pop(); err == nil {
			if k, err = u.pop(); err == nil {
				if d, err = u.top(); err == nil {
					err = setItems(d, []any{k, v})
				}
			}
		}
	case opSetItems:
		var items []any
		var d any
		if items, err = u.popMark(); err == nil {
			if d, err = u.top(); err == nil {
				err = setItems(d, items)
			}
		}
	case opBinPut, opLongBinPut:
		width := 1
		if op == opLongBinPut {
			width = 4
		}
		var i uint64
		var v any
		if i, err = in.uint(width); err == nil {
			if v, err = u.top(); err == nil {
				u.memo[i] = v
			}
		}
	case opMemoize:
		var v any
		if v, err = u.top(); err == nil {
			u.memo[uint64(len(u.memo))] = v
		}
	case opBinGet, opLongBinGet:
		width := 1
		if op == opLongBinGet {
			width = 4
		}
		var i uint64
		if i, err = in.uint(width); err == nil {
			v, ok := u.memo[i]
			if !ok {
				return false, fmt.Errorf("memo entry %d not defined", i)
			}
			u.push(v)
		}
	case opGlobal:
		var mod, name string
		if mod, err = in.line(); err == nil {
			if name, err = in.line(); err == nil {
				var g pyGlobal
				if g, err = allowedGlobal(mod, name); err == nil {
					u.push(g)
				}
			}
		}
	case opStackGlobal:
		var mod, name any
		if name, err = u.pop(); err == nil {
			if mod, err = u.pop(); err == nil {
				ms, ok1 := mod.(string)
				ns, ok2 := name.(string)
				if !ok1 || !ok2 {
					return false, errors.New("STACK_GLOBAL needs two strings")
				}
				var g pyGlobal
				if g, err = allowedGlobal(ms, ns); err == nil {
					u.push(g)
				}
			}
		}
	case opReduce:
		var args, fn any
		if args, err = u.pop(); err == nil {
			if fn, err = u.pop(); err == nil {
				t, ok := args.(Tuple)
				if !ok {
					return false, fmt.Errorf("REDUCE arguments are a %s, not a tuple", pyTypeName(args))
				}
				var v any
				if v, err = u.call(fn, t); err == nil {
					u.push(v)
				}
			}
		}
	case opNewObj, opNewObjEx:
		if op == opNewObjEx {
			if _, err = u.pop(); err != nil { // kwargs: not modelled
				return false, err
			}
		}
		var args, cls any
		if args, err = u.pop(); err == nil {
			if cls, err = u.pop(); err == nil {
				t, ok := args.(Tuple)
				if !ok {
					return false, fmt.Errorf("NEWOBJ arguments are a %s, not a tuple", pyTypeName(args))
				}
				var v any
				if v, err = newObject(cls, t); err == nil {
					u.push(v)
				}
			}
		}
	case opBuild:
		var inst any
		if _, err = u.pop(); err == nil { // the state
			if inst, err = u.top(); err == nil {
				switch o := inst.(type) {
				case *tensorRef:
					// A Parameter's state: not part of the values.
				case *pyDict:
					// An OrderedDict's attributes (state_dict's _metadata):
					// not part of the values.
					if !o.ordered {
						err = errors.New("BUILD on a dict (only tensors and OrderedDicts take a state)")
					}
				default:
					// As in torch's weights_only unpickler: BUILD sets the
					// state of tensors and OrderedDicts only.
					err = fmt.Errorf("BUILD on a %s (only tensors and OrderedDicts take a state)", pyTypeName(inst))
				}
			}
		}
	case opBinPersID:
		var pid any
		if pid, err = u.pop(); err == nil {
			if u.persistentLoad == nil {
				return false, errors.New("persistent id in a pickle that allows none")
			}
			var v any
			if v, err = u.persistentLoad(pid); err == nil {
				u.push(v)
			}
		}
	default:
		return false, errors.New("unsupported opcode")
	}
	return false, err
}

func appendTo(l any, vs ...any) error {
	pl, ok := l.(*pyList)
	if !ok {
		return fmt.Errorf("APPEND to a %s", pyTypeName(l))
	}
	pl.items = append(pl.items, vs...)
	return nil
}

func setItems(d any, items []any) error {
	pd, ok := d.(*pyDict)
	if !ok {
		return fmt.Errorf("SETITEM on a %s", pyTypeName(d))
	}
	if len(items)%2 != 0 {
		return errors.New("SETITEMS with an odd number of values")
	}
	for i := 0; i < len(items); i += 2 {
		if err := pd.set(items[i], items[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// decodeLong decodes a little-endian two's complement integer: an int64
// when it fits, a *big.Int when not.
func decodeLong(b []byte) any {
	if len(b) == 0 {
		return int64(0)
	}
	if len(b) <= 8 {
		var v uint64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		shift := 64 - 8*uint(len(b))
		return int64(v<<shift) >> shift
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	n := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	if n.IsInt64() {
		return n.Int64()
	}
	return n
}

func latin1(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

// blockedModules are never allowed, whatever the name (as in torch).
var blockedModules = map[string]bool{"sys": true, "os": true, "posix": true, "nt": true}

// allowedGlobals are the classes and functions a pickle may name: what
// torch.load(weights_only=True) allows and this package models. call and
// newObject say which of them may be called; the rest (dtypes, torch.Tensor,
// storage types) are values passed to the others.
var allowedGlobals = func() map[string]bool {
	m := map[string]bool{}
	for _, name := range []string{
		"collections.OrderedDict", "collections.Counter",
		"torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
		"torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
		"torch._tensor._rebuild_from_type_v2",
		"torch.Size", "torch.Tensor", "torch.nn.parameter.Parameter", "torch.device",
		"torch.UntypedStorage", "torch.storage.UntypedStorage",
		"_codecs.encode", "builtins.bytearray", "builtins.set",
		"torch.float32", "torch.float", "torch.float16", "torch.half", "torch.bfloat16",
		"torch.float64", "torch.double", "torch.int64", "torch.long", "torch.int32",
		"torch.int", "torch.int16", "torch.short", "torch.int8", "torch.uint8", "torch.bool",
	} {
		m[name] = true
	}
	for _, info := range dtypes {
		m["torch."+info.storage] = true
	}
	return m
}()

// allowedGlobal resolves GLOBAL module.name, refusing (as torch's
// weights_only unpickler does) anything that is not a tensor, a tensor's
// building block or a plain container. Python 2's __builtin__ is read as
// builtins.
func allowedGlobal(module, name string) (pyGlobal, error) {
	if module == "__builtin__" {
		module = "builtins"
	}
	g := pyGlobal{module, name}
	if blockedModules[module] {
		return g, fmt.Errorf("global %s is refused: module %s is never allowed (a file that runs code when loaded)", brief(g.String()), module)
	}
	if !allowedGlobals[g.String()] {
		return g, fmt.Errorf("global %s is refused: only tensors, containers and plain values are read, as torch.load(weights_only=True) reads them", brief(g.String()))
	}
	return g, nil
}

// call applies an allowed function or class to its arguments (REDUCE).
// Only the callables modelled here may be called; torch.device is kept as
// an *Object.
func (u *unpickler) call(fn any, args Tuple) (any, error) {
	g, ok := fn.(pyGlobal)
	if !ok {
		return nil, fmt.Errorf("cannot call a %s", pyTypeName(fn))
	}
	switch g.String() {
	case "collections.OrderedDict", "collections.Counter":
		d := newDict()
		d.ordered = true
		if len(args) > 1 {
			return nil, fmt.Errorf("%s with %d arguments", g, len(args))
		}
		if len(args) == 0 {
			return d, nil
		}
		switch items := args[0].(type) {
		case *pyList:
			if err := u.charge(len(items.items)); err != nil {
				return nil, err
			}
			for _, it := range items.items {
				kv, ok := it.(Tuple)
				if !ok || len(kv) != 2 {
					return nil, fmt.Errorf("%s item is not a pair", g)
				}
				if err := d.set(kv[0], kv[1]); err != nil {
					return nil, err
				}
			}
		case *pyDict:
			if err := u.charge(len(items.keys)); err != nil {
				return nil, err
			}
			for i, k := range items.keys {
				if err := d.set(k, items.vals[i]); err != nil {
					return nil, err
				}
			}
		default:
			return nil, fmt.Errorf("%s of a %s", g, pyTypeName(args[0]))
		}
		return d, nil
	case "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2":
		return u.rebuildTensor(args)
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		if len(args) < 1 {
			return nil, fmt.Errorf("%s without arguments", g)
		}
		if _, ok := args[0].(*tensorRef); !ok {
			return nil, fmt.Errorf("%s of a %s", g, pyTypeName(args[0]))
		}
		return args[0], nil
	case "torch._tensor._rebuild_from_type_v2":
		// (func, new_type, args, state): func(*args), a tensor, seen as
		// new_type (torch.Tensor or Parameter: any other class is refused
		// as a global before it gets here).
		if len(args) < 3 {
			return nil, fmt.Errorf("%s with %d arguments", g, len(args))
		}
		inner, ok := args[2].(Tuple)
		if !ok {
			return nil, fmt.Errorf("%s arguments are a %s", g, pyTypeName(args[2]))
		}
		if typ, ok := args[1].(pyGlobal); !ok || typ.String() != "torch.Tensor" && typ.String() != "torch.nn.parameter.Parameter" {
			return nil, fmt.Errorf("%s of type %s, not a tensor", g, pyTypeName(args[1]))
		}
		v, err := u.call(args[0], inner)
		if err != nil {
			return nil, err
		}
		if _, ok := v.(*tensorRef); !ok {
			return nil, fmt.Errorf("%s built a %s, not a tensor", g, pyTypeName(v))
		}
		return v, nil
	case "torch.Size":
		if len(args) == 0 {
			return Tuple{}, nil
		}
		switch s := args[0].(type) {
		case Tuple:
			return s, nil
		case *pyList:
			return Tuple(slices.Clip(s.items)), nil
		}
		return nil, fmt.Errorf("torch.Size of a %s", pyTypeName(args[0]))
	case "torch.device":
		for _, a := range args {
			switch a.(type) {
			case string, int64:
			default:
				return nil, fmt.Errorf("torch.device of a %s", pyTypeName(a))
			}
		}
		return &Object{Class: g.String(), Args: []any(args)}, nil
	case "_codecs.encode", "builtins.bytearray":
		// bytes and bytearray in protocol 2: encode(str, 'latin1'), or
		// bytearray(bytes).
		if len(args) == 0 && g.name == "bytearray" {
			return []byte{}, nil
		}
		if len(args) >= 1 {
			if b, ok := args[0].([]byte); ok && g.name == "bytearray" {
				return b, nil
			}
			if s, ok := args[0].(string); ok {
				if err := u.charge(len(s)); err != nil {
					return nil, err
				}
				enc := "utf-8"
				if len(args) >= 2 {
					enc, _ = args[1].(string)
				}
				return encodeString(s, enc)
			}
		}
		return nil, fmt.Errorf("%s of %d arguments (%s)", g, len(args), argTypes(args))
	case "builtins.set":
		if len(args) == 0 {
			return &pyList{}, nil
		}
		if l, ok := args[0].(*pyList); ok {
			return &pyList{items: slices.Clip(l.items)}, nil
		}
		return nil, fmt.Errorf("%s of a %s", g, pyTypeName(args[0]))
	}
	return nil, fmt.Errorf("cannot call %s (only tensors, containers and plain values are built)", g)
}

// encodeString is Python's str.encode for the encodings protocol 2 uses.
func encodeString(s, enc string) ([]byte, error) {
	switch strings.ToLower(strings.ReplaceAll(enc, "_", "-")) {
	case "latin1", "latin-1", "iso-8859-1":
		b := make([]byte, 0, len(s))
		for _, r := range s {
			if r > 0xff {
				return nil, errors.New("encode of a non-latin-1 string")
			}
			b = append(b, byte(r))
		}
		return b, nil
	case "utf-8", "utf8":
		return []byte(s), nil
	}
	return nil, fmt.Errorf("encode to %s", brief(enc))
}

func argTypes(args Tuple) string {
	names := make([]string, 0, min(len(args), 4))
	for _, a := range args[:min(len(args), 4)] {
		names = append(names, pyTypeName(a))
	}
	return strings.Join(names, ", ")
}

// newObject handles NEWOBJ, cls.__new__(cls, *args), for the classes torch
// allows it on that this package models: Parameter and the containers.
func newObject(cls any, args Tuple) (any, error) {
	g, ok := cls.(pyGlobal)
	if !ok {
		return nil, fmt.Errorf("NEWOBJ of a %s", pyTypeName(cls))
	}
	switch g.String() {
	case "torch.nn.parameter.Parameter":
		if len(args) >= 1 {
			if _, ok := args[0].(*tensorRef); ok {
				return args[0], nil
			}
		}
		return nil, fmt.Errorf("Parameter of %s", argTypes(args))
	case "collections.OrderedDict", "collections.Counter":
		d := newDict()
		d.ordered = true
		return d, nil
	case "builtins.set":
		return &pyList{}, nil
	}
	return nil, fmt.Errorf("NEWOBJ of %s is not allowed", g)
}

// brief is s cut to a length fit for a one-line error message, quoted when
// it holds anything but printable characters.
func brief(s string) string {
	const n = 80
	if len(s) > n {
		s = s[:n] + "..."
	}
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// briefValue shows a scalar for an error message without printing a huge
// value whole.
func briefValue(v any) string {
	switch v := v.(type) {
	case int64:
		return strconv.FormatInt(v, 10)
	case *big.Int:
		return fmt.Sprintf("of %d bits", v.BitLen())
	case string:
		return strconv.Quote(brief(v))
	case bool, float64, nil:
		return fmt.Sprint(v)
	}
	return ""
}

// seqLen is the length of a tuple or list, 0 for anything else.
func seqLen(v any) int {
	switch v := v.(type) {
	case Tuple:
		return len(v)
	case *pyList:
		return len(v.items)
	}
	return 0
}

// rebuildTensor models torch._utils._rebuild_tensor(_v2)(storage,
// storage_offset, size, stride, ...).
func (u *unpickler) rebuildTensor(args Tuple) (any, error) {
	if len(args) < 4 {
		return nil, fmt.Errorf("_rebuild_tensor with %d arguments", len(args))
	}
	st, ok := args[0].(*storageRef)
	if !ok {
		return nil, fmt.Errorf("_rebuild_tensor of a %s, not a storage", pyTypeName(args[0]))
	}
	off, ok := args[1].(int64)
	if !ok || off < 0 {
		return nil, fmt.Errorf("_rebuild_tensor storage offset is a %s %s", pyTypeName(args[1]), briefValue(args[1]))
	}
	if err := u.charge(seqLen(args[2]) + seqLen(args[3])); err != nil {
		return nil, err
	}
	size, err := intTuple(args[2])
	if err != nil {
		return nil, fmt.Errorf("_rebuild_tensor size: %v", err)
	}
	stride, err := intTuple(args[3])
	if err != nil {
		return nil, fmt.Errorf("_rebuild_tensor stride: %v", err)
	}
	if len(size) != len(stride) {
		return nil, fmt.Errorf("_rebuild_tensor size %v and stride %v differ in length", size, stride)
	}
	st.base().refs++
	return &tensorRef{storage: st, offset: off, size: size, stride: stride}, nil
}

func intTuple(v any) ([]int64, error) {
	var items []any
	switch t := v.(type) {
	case Tuple:
		items = t
	case *pyList:
		items = t.items
	default:
		return nil, fmt.Errorf("a %s, not a tuple", pyTypeName(v))
	}
	out := make([]int64, len(items))
	for i, it := range items {
		n, ok := it.(int64)
		if !ok {
			return nil, fmt.Errorf("element %d is a %s", i, pyTypeName(it))
		}
		out[i] = n
	}
	return out, nil
}

// pyTypeName names a value's type for error messages.
func pyTypeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case Tuple:
		return "tuple"
	case *pyList, []any:
		return "list"
	case *pyDict, map[string]any, map[any]any:
		return "dict"
	case pyGlobal:
		return "global " + v.String()
	case *Object:
		return v.Class + " object"
	case *storageRef:
		return "storage"
	case *tensorRef, RawTensor:
		return "tensor"
	}
	return fmt.Sprintf("%T", v)
}
