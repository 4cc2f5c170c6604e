# Plots of benchmarks/scaling.sh: step time and peak memory of the CGT training step, celltx against
# the PyTorch anchor, against N (log-log, with faint N and N^2 slopes) and against B.
#   gnuplot -e "datadir='docs/scaling'; plotdir='docs'; cap_gb=22" docs/scaling/scaling.gp
# Data columns: 1 x, 2 celltx_s, 3 celltx_mb, 4 torch_s, 5 torch_mb, 6 celltx_min_s, 7 celltx_max_s,
# 8 torch_min_s, 9 torch_max_s; NaN where a side ran out of memory. cap_gb: the anchor's address-space cap.
if (!exists("datadir")) datadir = 'docs/scaling'
if (!exists("plotdir")) plotdir = 'docs'
if (!exists("cap_gb")) cap_gb = 22
fileN = datadir.'/scaling_N.dat'
fileB = datadir.'/scaling_B.dat'

set terminal pngcairo size 1500,580 enhanced font 'Sans,11'
set grid xtics ytics mxtics mytics lc rgb '#e4e4e4' lw 1
set key top left box opaque samplen 2.5 font ',10'
set style line 1 lc rgb '#1f6fb4' lw 2.5 pt 7 ps 1.3   # celltx
set style line 2 lc rgb '#d2542b' lw 2.5 pt 5 ps 1.3   # PyTorch
set style line 3 lc rgb '#a8a8a8' lw 1.5 dt 2          # reference slopes
set style line 4 lc rgb '#d2542b' lw 1.2 dt 3          # PyTorch memory fit, extrapolated
set style line 5 lc rgb '#909090' lw 1 dt 4            # address-space cap
set fit quiet
set fit logfile '/dev/null'

# ------------------------------------------------------------------ against N (B = 32), log-log
set output plotdir.'/scaling_time_memory_vs_N.png'
set multiplot layout 1,2 title "CGT training step against the number of genes N (B = 32, d = 64, L = 6, H = 8, fp32, 2 threads): celltx and PyTorch, same work" font ',13'

# (stats before any range is set: stats filters by the current ranges)
# first measured point of each side, for the slope guides
stats fileN using 1 nooutput name 'nx'
stats fileN every ::0::0 using 2 nooutput name 'c0t'
stats fileN every ::0::0 using 4 nooutput name 't0t'
stats fileN every ::0::0 using 3 nooutput name 'c0m'
stats fileN every ::0::0 using 5 nooutput name 't0m'
stats fileN using 2 nooutput name 'ct'
stats fileN using 4 nooutput name 'tt'
stats fileN using 3 nooutput name 'cm'
tm_records = 0  # stays 0 when PyTorch held no size (stats then defines nothing)
stats fileN using 5 nooutput name 'tm'
xlo = nx_min / 1.25; xhi = nx_max * 1.25
oom_t = 2.5 * (ct_max > tt_max ? ct_max : tt_max)

set logscale xy
set xrange [xlo:xhi]
set xtics (1000, 2000, 4000, 6607, 13000, 20000)
set format y '%g'
set xlabel 'genes N (tokens N + 1)'
set ylabel 'seconds per step (median)'
set title 'step time'
set yrange [*:oom_t * 2.5]
plot c0t_min * (x / nx_min) ls 3 title 'slope N', \
     t0t_min * (x / nx_min)**2 ls 3 dt 3 title 'slope N^2', \
     fileN using 1:2 with linespoints ls 1 title 'celltx', \
     fileN using 1:4 with linespoints ls 2 title 'PyTorch', \
     fileN using 1:(valid(4) ? NaN : oom_t) with points ls 2 pt 2 ps 2.5 notitle, \
     fileN using 1:(valid(4) ? NaN : oom_t):("PyTorch\nOOM") with labels offset 0,2.2 tc rgb '#d2542b' font ',10' notitle

# PyTorch's peak memory as a + b N + c N^2 through its measured points, drawn on to the sizes it could not hold
# (with fewer than 3 measured points there is no fit, and the out-of-memory marks sit on the cap)
if (tm_records >= 3) {
  pa = 1000.; pb = 1.; pc = 1e-4
  fit pa + pb * x + pc * x**2 fileN using 1:5 via pa, pb, pc
  pfit(x) = pa + pb * x + pc * x**2
} else {
  pfit(x) = NaN
}
oom_m(x) = pfit(x) == pfit(x) ? pfit(x) : cap_gb * 1000
oom_text(x) = pfit(x) == pfit(x) ? sprintf("out of memory\n(fit: %.0f GB)", pfit(x) / 1000) : "out of memory"
set ylabel 'peak RSS (MB)'
set title 'peak memory (ru\_maxrss of the process)'
set yrange [*:*]
set autoscale y
set yrange [cm_min / 2:(oom_m(xhi) > cap_gb * 1000 ? oom_m(xhi) : cap_gb * 1000) * 2]
set label 1 sprintf('PyTorch address-space cap, %g GB', cap_gb) at xlo * 1.05, cap_gb * 1000 * 1.12 tc rgb '#808080' font ',9'
plot c0m_min * (x / nx_min) ls 3 title 'slope N', \
     t0m_min * (x / nx_min)**2 ls 3 dt 3 title 'slope N^2', \
     cap_gb * 1000 ls 5 notitle, \
     pfit(x) ls 4 title 'PyTorch fit a+bN+cN^2', \
     fileN using 1:3 with linespoints ls 1 title 'celltx', \
     fileN using 1:5 with linespoints ls 2 title 'PyTorch', \
     fileN using 1:(valid(5) ? NaN : oom_m($1)) with points ls 2 pt 2 ps 2.5 notitle, \
     fileN using 1:(valid(5) ? NaN : oom_m($1)):(oom_text($1)) with labels offset -1,-2.2 tc rgb '#d2542b' font ',10' notitle
unset label 1
unset multiplot

# ------------------------------------------------------------------ against B (N = 6607), log x
reset
set terminal pngcairo size 1500,580 enhanced font 'Sans,11'
set grid xtics ytics lc rgb '#e4e4e4' lw 1
set key top left box opaque samplen 2.5 font ',10'
set style line 1 lc rgb '#1f6fb4' lw 2.5 pt 7 ps 1.3
set style line 2 lc rgb '#d2542b' lw 2.5 pt 5 ps 1.3
set style line 5 lc rgb '#909090' lw 1 dt 4
set output plotdir.'/scaling_time_memory_vs_B.png'
set multiplot layout 1,2 title "CGT training step against the batch B (N = 6607 genes, Type I over all B·N rows, fp32, 2 threads): celltx and PyTorch, same work" font ',13'
stats fileB using 1 nooutput name 'bx'
stats fileB using 2 nooutput name 'ct'
stats fileB using 4 nooutput name 'tt'
stats fileB using 3 nooutput name 'cm'
stats fileB using 5 nooutput name 'tm'
oom_t = 1.1 * (ct_max > tt_max ? ct_max : tt_max)
set logscale x 2
set xrange [bx_min / 1.3:bx_max * 1.3]
set xtics (8, 16, 32, 64, 128, 256)
set xlabel 'batch B (perturbations per step)'
set ylabel 'seconds per step (median)'
set title 'step time'
set yrange [0:oom_t * 1.25]
plot fileB using 1:2 with linespoints ls 1 title 'celltx', \
     fileB using 1:4 with linespoints ls 2 title 'PyTorch', \
     fileB using 1:(valid(4) ? NaN : oom_t) with points ls 2 pt 2 ps 2.5 notitle, \
     fileB using 1:(valid(4) ? NaN : oom_t):("PyTorch:\nout of memory") with labels offset -2,-2 tc rgb '#d2542b' font ',10' notitle
set ylabel 'peak RSS (MB)'
set title 'peak memory (ru\_maxrss of the process)'
memtop = cap_gb * 1000 * 1.15
set yrange [0:memtop]
set label 1 sprintf('PyTorch address-space cap, %g GB', cap_gb) at bx_min / 1.2, cap_gb * 1000 * 1.03 tc rgb '#808080' font ',9'
plot cap_gb * 1000 ls 5 notitle, \
     fileB using 1:3 with linespoints ls 1 title 'celltx', \
     fileB using 1:5 with linespoints ls 2 title 'PyTorch', \
     fileB using 1:(valid(5) ? NaN : cap_gb * 1000) with points ls 2 pt 2 ps 2.5 notitle, \
     fileB using 1:(valid(5) ? NaN : cap_gb * 1000):("PyTorch:\nout of memory") with labels offset -2,-2 tc rgb '#d2542b' font ',10' notitle
unset multiplot
