/* hydra/runtime.h */
#ifndef HYDRA_RUNTIME_H
#define HYDRA_RUNTIME_H

#endif /* HYDRA_RUNTIME_H */
