package torch

import "errors"

// Must re-raises, inside tensor maths, a failure that a function of this package
// returned as an error rather than a panic (a collective of a ProcessGroup,
// SetRNGState): the *Error that err carries (found with errors.As, wrapped or not)
// becomes the panic, for the caller's Try to recover. A nil err does nothing. An err
// that carries no *Error is not this package's failure but a bug of the caller: it
// panics as it is, and Try does not recover it.
func Must(err error) {
	if err == nil {
		return
	}
	var te *Error
	if !errors.As(err, &te) {
		panic(err)
	}
	panic(te)
}
