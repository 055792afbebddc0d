// Package numfmt formats numbers for people: counts with thousands separators, as
// Python's format(n, ",") and peft's print_trainable_parameters write them.
package numfmt

import (
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// printer formats with English conventions: "," between groups of three digits.
var printer = message.NewPrinter(language.English)

// Thousands writes n with comma separators: 5898240 -> "5,898,240", -1234 -> "-1,234".
func Thousands(n int64) string { return printer.Sprintf("%d", n) }
