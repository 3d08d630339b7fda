package accesslog

import (
	"strconv"
	"time"
)

// timeFormat is a compiled %START_TIME(...)% format: Envoy's strftime (absl::FormatTime) with its
// extensions %f (nanoseconds), %1f..%9f (that many fraction digits), %s (Unix seconds) and
// %E<n>S / %E*S (seconds with n / all fraction digits). Times are UTC, as in Envoy. A nil
// *timeFormat is Envoy's default, 2016-04-15T20:17:00.310Z.
type timeFormat struct{ items []timeItem }

type timeItem struct {
	spec    byte // 0: literal
	literal string
	digits  int // fraction digits for 'f' and 'S' with a fraction
}

func parseTimeFormat(f string) *timeFormat {
	t := &timeFormat{}
	lit := []byte{}
	flush := func() {
		if len(lit) > 0 {
			t.items = append(t.items, timeItem{literal: string(lit)})
			lit = lit[:0]
		}
	}
	for i := 0; i < len(f); i++ {
		if f[i] != '%' || i+1 == len(f) {
			lit = append(lit, f[i])
			continue
		}
		c := f[i+1]
		switch {
		case c >= '1' && c <= '9' && i+2 < len(f) && f[i+2] == 'f':
			flush()
			t.items = append(t.items, timeItem{spec: 'f', digits: int(c - '0')})
			i += 2
		case c == 'E' && i+3 < len(f) && f[i+3] == 'S' && (f[i+2] == '*' || f[i+2] >= '0' && f[i+2] <= '9'):
			flush()
			d := 9
			if f[i+2] != '*' {
				d = int(f[i+2] - '0')
			}
			t.items = append(t.items, timeItem{spec: 'S', digits: d})
			i += 3
		case c == '%':
			lit = append(lit, '%')
			i++
		case isTimeSpec(c):
			flush()
			it := timeItem{spec: c}
			if c == 'f' {
				it.digits = 9
			}
			t.items = append(t.items, it)
			i++
		default:
			// absl passes unknown conversions through as text.
			lit = append(lit, '%', c)
			i++
		}
	}
	flush()
	return t
}

func isTimeSpec(c byte) bool {
	switch c {
	case 'Y', 'y', 'm', 'd', 'e', 'H', 'I', 'M', 'S', 'j', 'a', 'A', 'b', 'h', 'B', 'p', 'z', 'Z', 'T', 'F', 'D', 'R', 's', 'f', 'n', 't':
		return true
	}
	return false
}

var (
	shortDays   = [...]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}
	longDays    = [...]string{"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"}
	shortMonths = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
	longMonths  = [...]string{"January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"}
)

func (t *timeFormat) append(dst []byte, ts time.Time) []byte {
	ts = ts.UTC()
	if t == nil {
		dst = appendDate(dst, ts)
		dst = append(dst, 'T')
		dst = appendClock(dst, ts)
		dst = append(dst, '.')
		dst = appendFraction(dst, ts.Nanosecond(), 3)
		return append(dst, 'Z')
	}
	for _, it := range t.items {
		switch it.spec {
		case 0:
			dst = append(dst, it.literal...)
		case 'Y':
			dst = appendPadded(dst, ts.Year(), 4)
		case 'y':
			dst = appendPadded(dst, ts.Year()%100, 2)
		case 'm':
			dst = appendPadded(dst, int(ts.Month()), 2)
		case 'd':
			dst = appendPadded(dst, ts.Day(), 2)
		case 'e':
			if ts.Day() < 10 {
				dst = append(dst, ' ')
			}
			dst = strconv.AppendInt(dst, int64(ts.Day()), 10)
		case 'H':
			dst = appendPadded(dst, ts.Hour(), 2)
		case 'I':
			h := ts.Hour() % 12
			if h == 0 {
				h = 12
			}
			dst = appendPadded(dst, h, 2)
		case 'M':
			dst = appendPadded(dst, ts.Minute(), 2)
		case 'S':
			dst = appendPadded(dst, ts.Second(), 2)
			if it.digits > 0 {
				dst = append(dst, '.')
				dst = appendFraction(dst, ts.Nanosecond(), it.digits)
			}
		case 'j':
			dst = appendPadded(dst, ts.YearDay(), 3)
		case 'a':
			dst = append(dst, shortDays[ts.Weekday()]...)
		case 'A':
			dst = append(dst, longDays[ts.Weekday()]...)
		case 'b', 'h':
			dst = append(dst, shortMonths[ts.Month()-1]...)
		case 'B':
			dst = append(dst, longMonths[ts.Month()-1]...)
		case 'p':
			if ts.Hour() < 12 {
				dst = append(dst, "AM"...)
			} else {
				dst = append(dst, "PM"...)
			}
		case 'z':
			dst = append(dst, "+0000"...)
		case 'Z':
			dst = append(dst, "UTC"...)
		case 'T':
			dst = appendClock(dst, ts)
		case 'F':
			dst = appendDate(dst, ts)
		case 'D':
			dst = appendPadded(dst, int(ts.Month()), 2)
			dst = append(dst, '/')
			dst = appendPadded(dst, ts.Day(), 2)
			dst = append(dst, '/')
			dst = appendPadded(dst, ts.Year()%100, 2)
		case 'R':
			dst = appendPadded(dst, ts.Hour(), 2)
			dst = append(dst, ':')
			dst = appendPadded(dst, ts.Minute(), 2)
		case 's':
			dst = strconv.AppendInt(dst, ts.Unix(), 10)
		case 'f':
			dst = appendFraction(dst, ts.Nanosecond(), it.digits)
		case 'n':
			dst = append(dst, '\n')
		case 't':
			dst = append(dst, '\t')
		}
	}
	return dst
}

func appendDate(dst []byte, ts time.Time) []byte {
	dst = appendPadded(dst, ts.Year(), 4)
	dst = append(dst, '-')
	dst = appendPadded(dst, int(ts.Month()), 2)
	dst = append(dst, '-')
	return appendPadded(dst, ts.Day(), 2)
}

func appendClock(dst []byte, ts time.Time) []byte {
	dst = appendPadded(dst, ts.Hour(), 2)
	dst = append(dst, ':')
	dst = appendPadded(dst, ts.Minute(), 2)
	dst = append(dst, ':')
	return appendPadded(dst, ts.Second(), 2)
}

// appendPadded appends v in decimal, zero-padded to width.
func appendPadded(dst []byte, v, width int) []byte {
	if v < 0 {
		dst = append(dst, '-')
		v = -v
	}
	var b [20]byte
	i := len(b)
	for v > 0 || len(b)-i < width || i == len(b) {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, b[i:]...)
}

// appendFraction appends the first digits digits of ns (nanoseconds, 9 digits), truncated as
// Envoy does.
func appendFraction(dst []byte, ns, digits int) []byte {
	var b [9]byte
	for i := 8; i >= 0; i-- {
		b[i] = byte('0' + ns%10)
		ns /= 10
	}
	return append(dst, b[:digits]...)
}
