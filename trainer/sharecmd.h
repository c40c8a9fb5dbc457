// sharecmd.h: the `postshare match` and `postshare share` commands (DirectShare).
#pragma once

// postshare match MODEL [--match F] [--ratio R] -o PLAN.json [--no-plot] [--threads N]
int matchcmd_main(int argc, char **argv);
// postshare share MODEL --plan PLAN.json -o OUT [--materialize] [--force] [--dtype D]
int sharecmd_main(int argc, char **argv);
// postshare calibrate MODEL --data GLOB -o FILE: the calibration Grams (calib.h).
int calibcmd_main(int argc, char **argv);
