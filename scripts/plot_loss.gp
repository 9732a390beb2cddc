# scripts/plot_loss.gp — training loss (lines) and validation loss (points) against step for one
# or several bonsai runs, read from each run directory's metrics.csv, drawn to a PNG.
#
#   gnuplot -e "runs='runs/a runs/b'; out='loss.png'" scripts/plot_loss.gp
#
# Variables (all optional except runs): out (default loss.png), logy=1 for a log-scale loss axis,
# xcol='train_flops' to compare runs at equal compute instead of equal steps, title, width and
# height in pixels (default 1000 x 600), val_only=1 to draw only the validation points, labels
# (one word per run; default the run directories), ymin and ymax for the loss axis.
# metrics.csv: step,loss,val_loss,lr,grad_norm,ms,tokens_per_s,gflops,val_ppl,train_flops; a
# training row leaves val_loss empty, a validation row leaves loss empty (empty fields are
# missing points).

if (!exists("runs")) {
  print "usage: gnuplot -e \"runs='runs/a runs/b'; out='loss.png'\" scripts/plot_loss.gp"
  exit status 2
}
if (!exists("out")) out = "loss.png"
if (!exists("logy")) logy = 0
if (!exists("title")) title = "loss"
if (!exists("width")) width = 1000
if (!exists("height")) height = 600
if (!exists("xcol")) xcol = "step"
if (!exists("val_only")) val_only = 0

# pngcairo draws antialiased lines; the plain libgd png terminal is the fallback.
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size width, height enhanced font "sans,11"
} else {
  set terminal png size width, height
}
set output out

set datafile separator comma
set datafile missing ""
set key top right
set grid
set title title noenhanced
set xlabel (xcol eq "train_flops" ? "training FLOPs" : xcol)
set ylabel "loss"
if (logy) { set logscale y }
if (exists("ymin") && exists("ymax")) { set yrange [ymin:ymax] }

file(i) = word(runs, i) . "/metrics.csv"
name(i) = exists("labels") ? word(labels, i) : word(runs, i)

# Columns by name, so the plot keeps working if columns are added at the end.
if (val_only) {
  plot for [i=1:words(runs)] file(i) using (column(xcol)):(column("val_loss")) \
         with linespoints linecolor i linewidth 1.5 pointtype i pointsize 1.0 title name(i) noenhanced
} else {
  plot for [i=1:words(runs)] file(i) using (column(xcol)):(column("loss")) \
         with lines linecolor i linewidth 1.5 title name(i) noenhanced, \
       for [i=1:words(runs)] file(i) using (column(xcol)):(column("val_loss")) \
         with linespoints linecolor i dashtype 2 pointtype 7 pointsize 1.2 \
         title name(i) . " (val)" noenhanced
}
