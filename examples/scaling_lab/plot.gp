# Plots one scaling_lab CSV: load, workers and p99 wait over time.
#   gnuplot -e "csv='slo-guard_flash_sale.csv'; png='flash.png'" plot.gp
# (Debian: apt-get install gnuplot-nox)
set datafile separator ','
set terminal pngcairo size 1000,600 noenhanced
set output png
set multiplot layout 2,1 title csv
set xlabel 'time (s)'
set ylabel 'events/s'
set y2label 'workers'
set ytics nomirror
set y2tics
plot csv using 1:2 with lines title 'arrival rate', \
     csv using 1:4 axes x1y2 with steps title 'workers'
set ylabel 'p99 wait (ms)'
unset y2label
unset y2tics
set logscale y
plot csv using 1:($7 > 0 ? $7 : 0.001) with lines title 'p99 wait'
unset multiplot
