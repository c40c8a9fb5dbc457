// sweep.h: `postshare sweep CONFIG.yaml`, hyperparameter sweeps (docs/sweeps.md).
//
// A sweep config is a job config plus a top-level `sweep:` section that maps
// job keys to lists of values:
//     sweep:
//       share.reg.weight: [0, 0.1, 0.5]
//       share.ratio: [0.1, 0.3]
// The points are the cartesian product of the lists (the first key varies
// slowest). Each point is one `postshare train` run, in a child process, under
// the sweep directory run.out_dir/run.name; a point is finished when its run
// wrote results.json, and a sweep started again skips the finished points and
// resumes the others from their checkpoints. Afterwards the results of every
// point are collected into sweep.csv and gnuplot plots.
#pragma once

// CLI entry: argv holds the arguments after "sweep". Returns the exit status:
// 0 when every point ran, 1 on an error or a failed point, PS_EXIT_INTERRUPTED
// (resume.h) when a signal stopped the sweep.
int sweep_main(int argc, char **argv);
