# Reference cases that ../shared/reference/metafor does not hold, computed by R metafor 3.8-1 (R 4.2.2) in the
# same JSON format (see tests/reference/metafor/README.md): k = 2 leave-one-out and influence under z and
# Knapp-Hartung, and escalc(to = "none") with zero cells followed by rma (studies with NA left out).
# Regenerate: Rscript tests/reference/metafor-extra/generate.R  (needs metafor and jsonlite; the project does not)
suppressMessages({library(metafor); library(jsonlite)})
na <- function(x) { x <- as.numeric(x); if (length(x) == 0) NULL else ifelse(is.na(x), NA, x) }
summ <- function(r) list(k = r$k, estimate = na(r$beta), se = na(r$se), stat = na(r$zval), pval = na(r$pval),
                         ci_lb = na(r$ci.lb), ci_ub = na(r$ci.ub), tau2 = na(r$tau2), I2 = na(r$I2), H2 = na(r$H2),
                         Q = na(r$QE), Q_pval = na(r$QEp))
one <- function(id, source, measure, inputs, options, method, test, diag = TRUE) {
  es <- do.call(escalc, c(list(measure = measure), inputs, options))
  r <- suppressWarnings(rma(es$yi, es$vi, method = method, test = test))
  case <- list(id = id, source = source,
               escalc = list(measure = measure, inputs = inputs, options = if (length(options)) options else setNames(list(), character(0))),
               yi = na(es$yi), vi = na(es$vi), model = list(method = method, test = test, level = 0.95),
               expected = summ(r))
  if (diag) {
    l <- leave1out(r)
    case$leave_one_out <- list(estimate = na(l$estimate), se = na(l$se), ci_lb = na(l$ci.lb), ci_ub = na(l$ci.ub),
                               Q = na(l$Q), tau2 = na(l$tau2), I2 = na(l$I2))
    inf <- influence(r)$inf
    case$influence <- list(rstudent = na(inf$rstudent), dffits = na(inf$dffits), cooks_d = na(inf$cook.d),
                           cov_r = na(inf$cov.r), tau2_del = na(inf$tau2.del), Q_del = na(inf$QE.del),
                           hat = na(inf$hat), weight = na(inf$weight))
  }
  case
}
cases <- list()
k2 <- list(xi = c(12, 3), ni = c(20, 25))
for (m in c("REML", "DL")) for (t in c("z", "knha"))
  cases[[length(cases) + 1]] <- one(paste0("synthetic-k2-PLO-", m, "-", t), "synthetic: two heterogeneous proportions",
                                    "PLO", k2, list(), m, t)
k2b <- list(m1i = c(10.5, 4.2), sd1i = c(6.1, 5.0), n1i = c(23, 18), m2i = c(3.1, 5.9), sd2i = c(5.5, 4.7), n2i = c(22, 20))
for (t in c("z", "knha"))
  cases[[length(cases) + 1]] <- one(paste0("synthetic-k2-MD-REML-", t), "synthetic: two trials, mean differences",
                                    "MD", k2b, list(), "REML", t)
zc <- list(ai = c(0, 3, 5, 2), n1i = c(10, 12, 15, 9), ci = c(2, 4, 1, 0), n2i = c(11, 12, 14, 10))
for (m in c("RR", "OR"))
  cases[[length(cases) + 1]] <- one(paste0("synthetic-zerocells-", m, "-none-REML-z"),
                                    "synthetic: zero cells with to = 'none' (yi, vi NA; rma leaves them out)",
                                    m, zc, list(to = "none"), "REML", "z", diag = FALSE)
zp <- list(xi = c(0, 4, 7, 10), ni = c(12, 15, 20, 10))
cases[[length(cases) + 1]] <- one("synthetic-zerocells-PLO-none-DL-z",
                                  "synthetic: 0/n and n/n with to = 'none' (yi, vi NA; rma leaves them out)",
                                  "PLO", zp, list(to = "none"), "DL", "z", diag = FALSE)
out <- list(generator = paste0("metafor ", packageVersion("metafor"), ", ", R.version$version.string),
            group = "extra", cases = cases)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, na = "null", null = "null", pretty = FALSE),
           "tests/reference/metafor-extra/extra.json")
