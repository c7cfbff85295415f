# Plots one scaling_lab CSV: load, workers and p99 wait over time.
#   gnuplot -e "csv='slo-guard_flash_sale.csv'; png='flash.png'" plot.gp
# Optional: title='...' (default: the CSV's name), slo_ms=20 (the dashed
# line in the wait panel: the queue-wait SLO).
# (Debian: apt-get install gnuplot-nox)
if (!exists("title")) title = csv
if (!exists("slo_ms")) slo_ms = 20
set datafile separator ','
set terminal pngcairo size 1000,600 noenhanced
set output png
set multiplot layout 2,1 title title
set xlabel 'time (s)'
set ylabel 'events/s'
set y2label 'workers'
set ytics nomirror
set y2tics
set key top right
plot csv using 1:2 with lines title 'arrival rate', \
     csv using 1:4 axes x1y2 with steps lw 2 title 'workers (running + starting)'
set ylabel 'p99 wait per tick (ms)'
unset y2label
unset y2tics
set logscale y
set yrange [0.01:*]
set key bottom right
# Ticks in which nobody waited are drawn at the bottom of the log scale.
plot csv using 1:($7 > 0.01 ? $7 : 0.01) with lines title 'p99 wait', \
     slo_ms with lines dt 2 lc rgb 'red' title sprintf('SLO %g ms', slo_ms)
unset multiplot
