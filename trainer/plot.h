// plot.h: drawing PNGs with gnuplot (match's heat map, the sweep's plots).
#pragma once

// Run `gnuplot script` in directory dir (NULL: this one), its messages into
// the file log. Returns 0 when it drew, 1 when gnuplot is not installed, -1
// when it failed (see log).
int plot_gnuplot(const char *dir, const char *script, const char *log);
